"""What a failed downstream call becomes for the client (deployments/ingress/routes.py: as_api_error)."""

from ray.exceptions import ActorDiedError, ObjectLostError, RayTaskError
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


def test_a_lost_object_is_a_retryable_503_when_the_request_brought_its_photo():
    """scripts/container_check.sh's node kill: the worker died while postprocess fetched the segmenter's answer from
    it. The request uploaded its photo, so "upload it again" (404) would be wrong: the same request, retried, works."""
    lost = ObjectLostError("ab" * 28, None, "")
    in_postprocess = RayTaskError("render", "traceback", lost)
    for exc in (lost, in_postprocess):
        error = as_api_error(exc, uploaded=True)
        assert error is not None and error.status == 503 and error.headers["Retry-After"] == "1", exc
    # A click by image_id whose stored photo is gone still says to upload again.
    assert as_api_error(lost).status == 404 and as_api_error(lost).code == "unknown_image_id"
