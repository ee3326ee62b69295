"""The ingress keeps an uploaded photo up to UPLOAD_SPOOL_BYTES in memory while Starlette parses the form (no temporary
file to write and read back), and frees that buffer once the route has read it. Without Ray."""

import asyncio

from starlette.requests import Request

from deployments.ingress import routes


def _form_request(data: bytes) -> Request:
    boundary = "----spool"
    body = b"".join([f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
                     f"Content-Type: image/jpeg\r\n\r\n".encode(), data, f"\r\n--{boundary}--\r\n".encode()])
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]

    async def receive():
        return {"type": "http.request", "body": chunks.pop(0) if chunks else b"", "more_body": bool(chunks)}

    headers = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def test_a_6_mb_upload_is_parsed_in_memory_and_its_buffer_freed_once_read():
    data = bytes(range(256)) * (6_000_000 // 256)
    assert routes.UPLOAD_SPOOL_BYTES >= 16 << 20

    async def scenario():
        form = await _form_request(data).form()
        upload = form["image"]
        assert not upload.file._rolled  # still in memory: nothing went to a temporary file
        assert await routes._read_upload(upload, 30_000_000) == data
        assert upload.file.closed

    asyncio.run(scenario())


def test_the_read_stops_one_byte_past_the_limit():
    async def scenario():
        form = await _form_request(b"x" * 5000).form()
        return await routes._read_upload(form["image"], 1000)

    assert len(asyncio.run(scenario())) == 1001
