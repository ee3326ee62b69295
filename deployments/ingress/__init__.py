"""CPU front door: the HTTP API and the Python handle API, upload checks and decoding, request fan-out.

``core``: ``IngressCore``, the plain class that decodes, checks and drives the other stages through ``Stages``.
``routes``: the HTTP layer, FastAPI routes as thin adapters over the core. ``deployment``: the Ray Serve shell
(``Ingress``) and the stages as Serve handles (``RayStages``). Around the routes: ``deployments.http_guard``
(who may call, and how much) and ``deployments.http_errors`` (every refusal as JSON).
"""

from .core import IngressCore, RecentImages, Stages
from .deployment import Ingress, RayStages
from .routes import HEALTH_MAX_AGE_S, IngressRoutes, as_api_error, cutout_response, http_app

__all__ = ["HEALTH_MAX_AGE_S", "Ingress", "IngressCore", "IngressRoutes", "RayStages", "RecentImages", "Stages",
           "as_api_error", "cutout_response", "http_app"]
