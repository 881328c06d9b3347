"""The aiohttp applications a node serves: the main listener's, and a shape's own."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from mailmux.ingress.admin import AdminApi
from mailmux.ingress.api import Api, ApiContext
from mailmux.ingress.dashboard import Dashboard
from mailmux.ingress.shaped import ShapedIngress
from mailmux.vendors.inbound import Shape


def build_api_app(
    ctx: ApiContext,
    max_request_bytes: int,
    shapes: Sequence[Shape] = (),
    admin: AdminApi | None = None,
    dashboard: Dashboard | None = None,
) -> web.Application:
    """The main listener's app: the native API, the ESP-shaped APIs that are on, the admin API
    and the dashboard."""
    app = web.Application(client_max_size=max_request_bytes)
    app.add_routes(Api(ctx, max_request_bytes, shapes).routes())
    if admin is not None:
        app.add_routes(admin.routes())
    if dashboard is not None:
        app.add_routes(dashboard.routes())
        app.on_shutdown.append(dashboard.on_shutdown)  # open streams end; the stop goes on
    for shape in shapes:
        app.add_routes(ShapedIngress(shape, ctx, max_request_bytes).routes())
    return app


def build_shape_app(ctx: ApiContext, max_request_bytes: int, shape: Shape) -> web.Application:
    """A shape's own listener: that ESP's send API and nothing else."""
    app = web.Application(client_max_size=max_request_bytes)
    app.add_routes(ShapedIngress(shape, ctx, max_request_bytes).routes())
    return app
