"""Scaffolding for the SMTP submission tests: mailmux in-process with its SMTP server on,
in front of emulated vendors (HTTP ESPs and the SMTP emulator), and clients that talk to
it from a thread (`smtplib`) or from a raw socket (hostile input).

Everything binds 127.0.0.1 (and 127.0.0.2 as a peer that is "not local"); every server
started here is stopped when its context ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from shaped_kit import CLIENT_KEY, CLIENT_NAME, VENDOR_SETTINGS
from tls_kit import Certificate

from mailmux.app import App
from mailmux.config import Config
from mailmux.emulator import SmtpEmulator
from mailmux.emulator.faults import Faults
from mailmux.emulator.server import Emulator

__all__ = ["CLIENT_KEY", "CLIENT_NAME"]

ANON_KEY = "anonymous-key-9876543210"
TIMEOUT = 10.0

#: A signed message as a DKIM signer leaves it: signed headers folded, and a body of
#: 8-bit text, that must reach a raw-MIME vendor exactly as they are.
SIGNED = (
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel;\r\n"
    b"\th=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
    b"\tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==\r\n"
    b"From: Shop <shop@example.com>\r\n"
    b"To: Ana <ana@example.org>\r\n"
    b"Subject: A subject that is long enough to have been folded by the sender\r\n"
    b"  onto a second line\r\n"
    b"Date: Tue, 01 Jan 2030 00:00:00 +0000\r\n"
    b"Message-ID: <signed-1@example.com>\r\n"
    b"References: <a@example.com>\r\n"
    b" <b@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe,  two spaces   and trailing blanks   \r\n"
    b".a line that starts with a dot\r\n"
)


def tls_settings(certificate: Certificate, **more: Any) -> dict[str, Any]:
    """`smtp:` settings for STARTTLS on `listen` and implicit TLS on `listen_tls`."""
    return {
        "tls_cert_file": str(certificate.cert),
        "tls_key_file": str(certificate.key),
        "listen_tls": "127.0.0.1:0",
        **more,
    }


class Mailmux:
    """A running mailmux with its SMTP server and emulated vendors, by vendor name."""

    def __init__(self, app: App, emulators: Mapping[str, Emulator | SmtpEmulator]) -> None:
        self.app = app
        self.emulators = dict(emulators)

    @property
    def port(self) -> int:
        assert self.app.smtp_port is not None
        return self.app.smtp_port

    @property
    def tls_port(self) -> int:
        assert self.app.smtp_tls_port is not None
        return self.app.smtp_tls_port

    def received(self, vendor: str) -> list[Any]:
        """What the emulator behind `vendor` accepted (decoded JSON bodies), oldest first."""
        return [m.body for m in self.emulators[vendor].messages]

    def total_received(self) -> int:
        return sum(len(e.messages) for e in self.emulators.values())

    def set_faults(self, vendor: str, faults: Mapping[str, Any]) -> None:
        self.emulators[vendor].set_faults(Faults.from_json(faults))

    async def spooled(self) -> int:
        """Messages the spool holds in any state."""
        counts = await self.app.store.count_by_state()
        return sum(counts.values())

    async def wait_for(self, vendor: str, count: int, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while len(self.emulators[vendor].messages) < count:
                await asyncio.sleep(0.02)

    def client(
        self, *, source: str = "127.0.0.1", tls_port: bool = False, **kwargs: Any
    ) -> smtplib.SMTP:
        """A connected smtplib client (call from a thread: the server runs on this loop)."""
        port = self.tls_port if tls_port else self.port
        if tls_port:
            return smtplib.SMTP_SSL(
                "127.0.0.1", port, timeout=TIMEOUT, source_address=(source, 0), **kwargs
            )
        return smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT, source_address=(source, 0))


def _vendor_settings(kind: str, emulator: Emulator | SmtpEmulator) -> dict[str, Any]:
    if kind == "smtp":
        return {"host": "127.0.0.1", "port": emulator.port, "tls": "none"}
    return {"base_url": f"http://127.0.0.1:{emulator.port}", **VENDOR_SETTINGS[kind]}


@contextlib.asynccontextmanager
async def mailmux(
    tmp_path: Path,
    vendors: Mapping[str, str],
    *,
    smtp: Mapping[str, Any] | None = None,
    **sections: Any,
) -> AsyncIterator[Mailmux]:
    """mailmux with `smtp.listen: 127.0.0.1:0` (plus `smtp`), one emulator per vendor
    (`{"relay": "smtp", "backup": "sendgrid"}`, weight 1 each unless `weights=` says
    otherwise); client keys `CLIENT_KEY` (client `CLIENT_NAME`) and `ANON_KEY`."""
    weights = sections.pop("weights", {})
    emulators: dict[str, Emulator | SmtpEmulator] = {}
    try:
        for name, kind in vendors.items():
            emulator = SmtpEmulator() if kind == "smtp" else Emulator(kind)
            await emulator.start()
            emulators[name] = emulator
        config = Config.model_validate(
            {
                "listen": "127.0.0.1:0",
                "store": f"sqlite:///{tmp_path / 'smtp.db'}",
                "node_id": "test-node",
                "api_keys": [ANON_KEY],
                "clients": {CLIENT_NAME: {"key": CLIENT_KEY}},
                "delivery": {"attempt_timeout": 3.0},
                "retry": {"base_delay": 0.05, "max_delay": 0.3, "poll_interval": 0.05},
                "smtp": {"listen": "127.0.0.1:0", **(smtp or {})},
                "vendors": {
                    name: {
                        "kind": kind,
                        "weight": weights.get(name, 1),
                        **_vendor_settings(kind, emulators[name]),
                    }
                    for name, kind in vendors.items()
                },
                **sections,
            }
        )
        app = App(config)
        await app.start()
        try:
            yield Mailmux(app, emulators)
        finally:
            await app.stop()
    finally:
        for emulator in emulators.values():
            await emulator.stop()


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking client call, bounded, while mailmux serves on this loop."""
    async with asyncio.timeout(TIMEOUT * 2):
        return await asyncio.to_thread(fn, *args, **kwargs)


class RawClient:
    """A byte-level SMTP client for input no library would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> RawClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=2**20
        )
        client = cls(reader, writer)
        greeting = await client.reply()
        assert greeting.startswith("220"), greeting
        return client

    async def reply(self, timeout: float = TIMEOUT) -> str:
        """One whole reply (every line of a multi-line one), "" when the server closed."""
        lines = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    return "".join(lines)
                lines.append(line.decode("utf-8", "replace"))
                if line[3:4] != b"-":
                    return "".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str | bytes) -> str:
        data = line if isinstance(line, bytes) else line.encode()
        await self.send(data + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
