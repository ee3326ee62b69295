"""What a failed downstream call becomes for the client (deployments/ingress.py: as_api_error)."""

from ray.exceptions import ActorDiedError
from ray.serve.exceptions import RayServeException

from deployments.ingress import as_api_error


def test_replica_death_is_a_retryable_503():
    error = as_api_error(ActorDiedError())
    assert error.status == 503 and error.code == "replica_unavailable" and error.headers["Retry-After"] == "1"


def test_upstream_replica_death_wrapped_by_serve_is_a_retryable_503():
    """The postprocess call waited on a segmenter whose node went away: Serve raises its own wrapper."""
    wrapped = RayServeException("Request to deployment 'Postprocess' failed because an upstream actor died")
    wrapped.__cause__ = ActorDiedError()
    error = as_api_error(wrapped)
    assert error is not None and error.status == 503 and error.code == "replica_unavailable"


def test_other_serve_errors_stay_faults():
    assert as_api_error(RayServeException("something else")) is None
