"""Which ESP-shaped APIs a node serves, and where (`ingress.<shape>.enabled` / `.listen`)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from shaped_kit import CLIENT_KEY, router

MESSAGE = {
    "personalizations": [{"to": [{"email": "user@example.net"}]}],
    "from": {"email": "app@shop.example"},
    "subject": "hi",
    "content": [{"type": "text/plain", "value": "hello"}],
}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def test_a_shape_turned_off_is_not_served(tmp_path: Path) -> None:
    ingress = {"sendgrid": {"enabled": False}}
    async with router(tmp_path, {"box": "postmark"}, ingress=ingress) as mux:
        async with aiohttp.ClientSession() as http:
            off = await http.post(f"{mux.url}/v3/mail/send", json=MESSAGE, headers=AUTH)
            on = await http.post(
                f"{mux.url}/email",
                json={"From": "app@shop.example", "To": "user@example.net", "TextBody": "x"},
                headers={"X-Postmark-Server-Token": CLIENT_KEY},
            )
            document = await (await http.get(f"{mux.url}/v1/openapi.json")).json()

        assert off.status == 404 and (await off.json())["error"]["code"] == "not_found"
        assert on.status == 200, await on.text()
        assert "/v3/mail/send" not in document["paths"] and "/email" in document["paths"]
        assert await mux.received("box")  # the Postmark request went out


async def test_a_shape_with_a_listener_of_its_own_is_served_there_too(tmp_path: Path) -> None:
    ingress = {"sendgrid": {"listen": "127.0.0.1:0"}}
    async with router(tmp_path, {"box": "sendgrid"}, ingress=ingress) as mux:
        own = f"http://127.0.0.1:{mux.app.shape_ports['sendgrid']}"
        async with aiohttp.ClientSession() as http:
            there = await http.post(f"{own}/v3/mail/send", json=MESSAGE, headers=AUTH)
            main = await http.post(f"{mux.url}/v3/mail/send", json=MESSAGE, headers=AUTH)
            native = await http.get(f"{own}/v1/health", headers=AUTH)
            wrong_key = await http.post(
                f"{own}/v3/mail/send", json=MESSAGE, headers={"Authorization": "Bearer nope"}
            )

        assert there.status == 202 and main.status == 202
        assert there.headers["X-Mailmux-Message-Id"] != main.headers["X-Mailmux-Message-Id"]
        assert native.status == 404  # only that ESP's API lives on its own listener
        assert wrong_key.status == 401  # and it asks for the same keys
        assert len(await mux.received("box")) == 2
