"""Scaffolding for the ESP-shaped ingress tests: mailmux in-process in front of emulators.

`Router` runs the whole App (real sockets on 127.0.0.1) with one vendor per
emulator it starts, so a test points an ESP's official SDK at `router.url`
and reads back what each emulator received. The SDKs are synchronous: call
them through `router.call(fn, ...)`, which runs them on a thread while the
test's loop keeps serving mailmux and the emulators.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from mailmux.app import App
from mailmux.config import Config
from mailmux.emulator.faults import Faults
from mailmux.emulator.server import Emulator

T = TypeVar("T")

#: Settings each emulated vendor kind needs besides its base_url.
VENDOR_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    "sendgrid": {"api_key": "SG.vendor-key"},
    "mailgun": {"api_key": "mg-vendor-key", "domain": "mg.vendor.example"},
    "postmark": {"api_key": "pm-vendor-token"},
    "sparkpost": {"api_key": "sp-vendor-key"},
    "ses": {
        "region": "eu-west-1",
        "access_key_id": "AKIAVENDOR",
        "secret_access_key": "vendor-secret",
    },
    "resend": {"api_key": "re_vendor_key"},
    "mailjet": {"api_key": "mj-vendor-key", "api_secret": "mj-vendor-secret"},
    "brevo": {"api_key": "xkeysib-vendor"},
}

#: The client key the tests' SDKs use; `CLIENT_NAME` is its client's name.
CLIENT_KEY = "client-key-0123456789"
CLIENT_NAME = "billing"


class Router:
    """A running mailmux with its emulated vendors, by vendor name."""

    def __init__(self, app: App, emulators: Mapping[str, Emulator]) -> None:
        self.app = app
        self.emulators = dict(emulators)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking SDK call, on a thread, while mailmux serves on this loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def received(self, vendor: str) -> list[dict[str, Any]]:
        """What the emulator behind `vendor` accepted, oldest first (also while it is down)."""
        return [
            {"id": m.id, "headers": dict(m.headers), "body": m.body, "raw": m.raw_body}
            for m in self.emulators[vendor].messages
        ]

    async def faults(self, vendor: str, faults: Any) -> None:
        """Set the faults of the emulator behind `vendor`, as `POST /_emulator/faults` would
        (straight on the object: its port may be down)."""
        self.emulators[vendor].set_faults(Faults.from_json(faults))

    async def message(self, message_id: str) -> dict[str, Any]:
        """`GET /v1/messages/{id}`: the message's state, attempts and events."""
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.url}/v1/messages/{message_id}", headers=headers) as answer,
        ):
            assert answer.status == 200, await answer.text()
            found: dict[str, Any] = await answer.json()
            return found


@contextlib.asynccontextmanager
async def router(
    tmp_path: Path,
    vendors: Mapping[str, str],
    *,
    weights: Mapping[str, float] | None = None,
    **sections: Any,
) -> AsyncIterator[Router]:
    """mailmux in front of one emulator per vendor (`{"backup": "mailgun", ...}`).

    Every vendor has weight 1 unless `weights` says otherwise (0: fallback
    only). Client keys: `CLIENT_KEY` for client `CLIENT_NAME`. `sections`
    are further config sections (`limits={...}`, `ingress={...}`).
    """
    emulators: dict[str, Emulator] = {}
    try:
        for name, kind in vendors.items():
            emulator = Emulator(kind)
            await emulator.start()
            emulators[name] = emulator
        config = Config.model_validate(
            {
                "listen": "127.0.0.1:0",
                "store": f"sqlite:///{tmp_path / 'router.db'}",
                "node_id": "test-node",
                "clients": {CLIENT_NAME: {"key": CLIENT_KEY}},
                "delivery": {"attempt_timeout": 5.0},
                "retry": {"base_delay": 0.05, "max_delay": 0.5, "poll_interval": 0.05},
                "vendors": {
                    name: {
                        "kind": kind,
                        "base_url": f"http://127.0.0.1:{emulators[name].port}",
                        "weight": (weights or {}).get(name, 1),
                        **VENDOR_SETTINGS[kind],
                    }
                    for name, kind in vendors.items()
                },
                **sections,
            }
        )
        app = App(config)
        await app.start()
        try:
            yield Router(app, emulators)
        finally:
            await app.stop()
    finally:
        for emulator in emulators.values():
            await emulator.stop()
