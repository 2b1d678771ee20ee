"""Reading a query's image bytes within bounds: the body's size (max_body_mb, counted while reading, for
raw, chunked and multipart bodies alike), the bytes all requests hold at once (max_inflight_mb), and a
strict multipart parser whose every failure is the client's (a 400), never the server's.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from email.message import Message

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

MAX_PART_HEADER = 8 * 1024  # bytes; a part's headers beyond this are a 400
IMAGE_FIELDS = ("image", "file")


class Busy(Exception):
    """The bytes in flight would pass max_inflight_mb: answered 503 with Retry-After."""


class BytesInFlight:
    """The bytes every request being handled holds (its body, while read, decoded and answered)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0


class Held:
    """One request's share of BytesInFlight; released once the request is answered and no decode of its
    bytes still runs in a worker thread (a decode past its deadline finishes there before letting go)."""

    def __init__(self, budget: BytesInFlight):
        self.budget = budget
        self.amount = 0
        self.pinned: Future | None = None

    def grow_to(self, total: int) -> None:
        extra = total - self.amount
        if extra <= 0:
            return
        if self.budget.used + extra > self.budget.limit:
            raise Busy()
        self.budget.used += extra
        self.amount = total

    def pin(self, job: Future) -> None:
        self.pinned = job

    def release(self) -> None:
        job, self.pinned = self.pinned, None
        if job is not None and not job.done():
            loop = asyncio.get_running_loop()
            job.add_done_callback(lambda _: loop.call_soon_threadsafe(self.release))
            return
        self.budget.used -= self.amount
        self.amount = 0


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(reason=message)


async def read_raw(request: web.Request, limit: int, held: Held) -> bytes:
    """The body as sent (after its Content-Encoding), over `limit` bytes a 413 (from Content-Length
    before reading, else once the bytes read pass it); each chunk is taken from the bytes in flight."""
    length = request.content_length
    if length is not None and length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
    held.grow_to(length or 0)
    data = bytearray()
    try:
        async for chunk in request.content.iter_any():
            data.extend(chunk)
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
            held.grow_to(len(data))
    except (HttpProcessingError, web.RequestPayloadError) as exc:  # a gzip header on a plain body, bad chunking
        encoding = request.headers.get("Content-Encoding", "identity")
        detail = " ".join(str(exc).split())[:80] or type(exc).__name__
        raise bad_request(f"the body cannot be read as sent (Content-Encoding: {encoding[:20]}; {detail})") from None
    return bytes(data)


def header_params(value: str, name: str = "content-type") -> Message:
    message = Message()
    message[name] = value
    return message


def boundary_of(content_type: str) -> bytes:
    boundary = header_params(content_type).get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise bad_request("a multipart body needs a boundary of 1 to 70 ASCII characters in its Content-Type")
    return boundary.encode()


def parse_part_headers(raw: bytes) -> tuple[str | None, str | None, str]:
    """(field name, file name, content type) of one part."""
    try:
        lines = raw.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        raise bad_request("a multipart part's headers are not UTF-8") from None
    headers = {}
    for line in filter(None, lines):  # a part may have no headers at all
        name, colon, value = line.partition(":")
        if not colon:
            raise bad_request(f"a multipart part has a malformed header line: {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    disposition = header_params(headers.get("content-disposition", ""), "content-disposition")
    field, filename = disposition.get_param("name", header="content-disposition"), disposition.get_filename()
    content_type = headers.get("content-type", "")
    return (field if isinstance(field, str) else None), filename, content_type


def image_part(body: bytes, content_type: str) -> bytes:
    """The first part with a file name or named image/file of a multipart body; a malformed body is a 400."""
    delimiter = b"--" + boundary_of(content_type)
    first = 0 if body.startswith(delimiter) else body.find(b"\r\n" + delimiter)
    if first < 0:
        raise bad_request("the multipart body does not hold the boundary its Content-Type names")
    position = first + len(delimiter) + (0 if body.startswith(delimiter) else 2)
    while True:
        if body[position : position + 2] == b"--":
            raise bad_request("the multipart body holds no image part (name it image or file)")
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise bad_request("the multipart body is malformed after a boundary")
        headers_end = body.find(b"\r\n\r\n", line_end, line_end + 2 + MAX_PART_HEADER + 4)
        if headers_end < 0:
            raise bad_request(f"a multipart part's headers are missing their end or run over {MAX_PART_HEADER} bytes")
        field, filename, part_type = parse_part_headers(body[line_end + 2 : headers_end])
        content_end = body.find(b"\r\n" + delimiter, headers_end + 4)
        if content_end < 0:
            raise bad_request("the multipart body ends without its closing boundary (truncated?)")
        if part_type.lower().startswith("multipart/"):
            raise bad_request("a nested multipart part is not taken: send the image as one part")
        if filename is not None or field in IMAGE_FIELDS:
            return body[headers_end + 4 : content_end]
        position = content_end + 2 + len(delimiter)


async def read_image_bytes(request: web.Request, limit: int, held: Held) -> bytes:
    """The raw body, or the image part of a multipart one (browsers, `curl -F image=@photo.jpg`)."""
    body = await read_raw(request, limit, held)
    if not request.content_type.startswith("multipart/"):
        return body
    part = image_part(body, request.headers.get("Content-Type", ""))
    held.grow_to(len(body) + len(part))  # the part is a copy
    return part
