"""Reading a request body into one buffer, with the size limit checked first.

aiohttp's `Request.read()` grows a bytearray chunk by chunk, copies it into
bytes and keeps that copy for the life of the request, so a large body is
held two or three times over while it is parsed. Here a body with a
Content-Length is read into a buffer allocated once at its final size,
nothing else keeps it, and the caller drops it as soon as it has parsed it;
a body over the limit is refused from its Content-Length, before any of it
is read.
"""

from __future__ import annotations

from aiohttp import web


class BodyTooLarge(Exception):
    """The request body is larger than the limit."""


async def read_body(request: web.BaseRequest, limit: int) -> bytearray:
    """The whole body, at most `limit` bytes; raises BodyTooLarge beyond that."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge
    if length is None:  # chunked: grow as it comes
        grown = bytearray()
        while chunk := await request.content.readany():
            grown += chunk
            if len(grown) > limit:
                raise BodyTooLarge
        return grown
    buffer = bytearray(length)
    filled = 0
    while filled < length and (chunk := await request.content.readany()):
        end = filled + len(chunk)
        buffer[filled:end] = chunk  # same length: filled in place, never reallocated
        filled = end
    if filled < length:  # the sender stopped early
        del buffer[filled:]
    return buffer
