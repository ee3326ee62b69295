"""The echo app: one FastAPI ingress deployment that reads a /v1/cutout request's form as the graph's ingress
does and answers a fixed PNG without any work. Run behind the same Serve HTTP proxy as the graph, it is the cost
of one bare Serve call that ``bgremove bench overhead`` compares a click's overhead with."""

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import Response
from ray import serve
from ray.serve import Application

ROUTE_PREFIX = "/echo"

echo_http = FastAPI()


@serve.deployment(name="Echo", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(echo_http)
class Echo:
    def __init__(self, answer: bytes):
        self.answer = answer

    @echo_http.post("/v1/cutout")
    async def cutout(self, image: UploadFile | None = File(None), image_id: str | None = Form(None),
                     points: str | None = Form(None), labels: str | None = Form(None),
                     mask_only: bool = Form(False)) -> Response:
        if image is not None:
            await image.read()
        return Response(self.answer, media_type="image/png")


def deploy_echo(answer: bytes) -> None:
    """Runs the echo app next to the graph, as a second Serve application under ROUTE_PREFIX."""
    app: Application = Echo.bind(answer)
    serve.run(app, name="bench_echo", route_prefix=ROUTE_PREFIX)
