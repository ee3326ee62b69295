"""Edge quality of the cut-out on synthetic photos with known alpha and colours (``bgremove edge-quality``).

Modules: ``run`` (the command), ``measure`` (each method scored on a set of photos), ``tuning`` (the grid
search and the solver comparison), ``synthetic`` (the photos and SAM-like logits), ``metrics``.
"""

from .measure import colour_check
from .run import main
from .synthetic import QUICK_SIZES

__all__ = ["QUICK_SIZES", "colour_check", "main"]
