"""mailmux in-process from a YAML file, in front of one sendgrid emulator per vendor.

Tests that need the whole server (routing, reload, limits) over real sockets
start a `node`, rewrite its file, and read what each emulator received.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from mailmux.app import App
from mailmux.config import load_config
from mailmux.emulator.control import MAX_MESSAGES
from mailmux.emulator.server import Emulator

CLIENT_KEY = "client-key-reload-0123"
ADMIN_KEY = "admin-key-reload-4567"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"from": "app@shop.example", "to": ["user@example.net"], "subject": "s", "text": "t"}


class Node:
    """A running App from `path`, with its emulators (one per vendor, by name)."""

    def __init__(
        self,
        app: App,
        path: Path,
        emulators: Mapping[str, Emulator],
        extra: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.path = path
        self.emulators = dict(emulators)
        self.extra = dict(extra or {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    def write(self, weights: Mapping[str, float], **sections: Any) -> None:
        """Rewrite the config file with these vendors and weights (emulators must exist)."""
        config = document(self.path, self.emulators, weights, sections, self.extra)
        self.path.write_text(yaml.safe_dump(config))

    async def admin(self, method: str, path: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.url}/admin/v1/{path}", headers=headers) as answer,
        ):
            return answer.status, await answer.json()

    async def reload(self) -> tuple[int, Any]:
        return await self.admin("POST", "reload")


def document(
    path: Path,
    emulators: Mapping[str, Emulator],
    weights: Mapping[str, float],
    sections: Mapping[str, Any],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The config: `sections` merged over the defaults, `extra` over each vendor's settings."""
    extra = extra or {}
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "store": f"sqlite:///{path.parent / 'mailmux.db'}",
        "node_id": "test-node",
        "api_keys": [CLIENT_KEY],
        "admin_keys": [ADMIN_KEY],
        "delivery": {"attempt_timeout": 5.0},
        "health": {"consecutive_failures": 3, "base_ejection_seconds": 60.0},
        "retry": {"base_delay": 0.05, "max_delay": 0.5, "poll_interval": 0.05},
        "reload": {"watch": False},
        "vendors": {
            name: {
                "kind": "sendgrid",
                "api_key": "SG.vendor-key",
                "base_url": f"http://127.0.0.1:{emulators[name].port}",
                "weight": weight,
                **extra.get(name, {}),
            }
            for name, weight in weights.items()
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@contextlib.asynccontextmanager
async def node(
    tmp_path: Path,
    weights: Mapping[str, float],
    *,
    spare: int = 0,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    max_messages: int = MAX_MESSAGES,
    **sections: Any,
) -> AsyncIterator[Node]:
    """mailmux from a file with `weights`; `spare` more emulators (c, d, ...) for later files;
    `extra` settings per vendor; each emulator keeps the last `max_messages` it accepted."""
    names = [*weights, *(chr(ord("a") + len(weights) + i) for i in range(spare))]
    emulators = {name: Emulator("sendgrid", max_messages=max_messages) for name in names}
    try:
        for emulator in emulators.values():
            await emulator.start()
        path = tmp_path / "mailmux.yaml"
        path.write_text(yaml.safe_dump(document(path, emulators, weights, sections, extra)))
        app = App(load_config(path), config_path=path)
        await app.start()
        try:
            yield Node(app, path, emulators, extra)
        finally:
            await app.stop()
    finally:
        for emulator in emulators.values():
            await emulator.stop()
