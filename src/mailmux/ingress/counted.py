"""Counts each ingress request by shape and answer status (`mailmux_ingress_requests_total`).

A wrapper rather than a line before every `return` in the handlers: the
native handler alone has a dozen answers, and a new one must not go
uncounted. With metrics off the handler is returned unwrapped, so the hot
path pays nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from mailmux.metrics import Recorder

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def counted(handler: Handler, metrics: Recorder, shape: str) -> Handler:
    """`handler`, counting every answer it gives under `shape`."""
    if not metrics.enabled:
        return handler

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as err:
            metrics.request(shape, err.status)
            raise
        except Exception:
            metrics.request(shape, 500)  # aiohttp answers an unhandled error with a 500
            raise
        metrics.request(shape, response.status)
        return response

    return handle
