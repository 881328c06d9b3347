"""Runs mailmux as a real process for end-to-end tests (real sockets, real kill -9)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fast_config(
    db: Path, vendors: Mapping[str, Mapping[str, Any]], **sections: Any
) -> dict[str, Any]:
    """A config tuned so retries and ejections happen within a test's time."""
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "store": f"sqlite:///{db}",
        "node_id": "test-node",
        "delivery": {"attempt_timeout": 2.0},
        "health": {
            "consecutive_failures": 3,
            "min_requests": 10,
            "window_seconds": 30.0,
            "base_ejection_seconds": 30.0,
            "max_ejection_seconds": 60.0,
        },
        "retry": {
            "base_delay": 0.05,
            "max_delay": 0.5,
            "poll_interval": 0.05,
            "lease_seconds": 10.0,
        },
        "vendors": {name: dict(v) for name, v in vendors.items()},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


class MailmuxProcess:
    """`mailmux serve` in a child process; `url` is ready once `start()` returns."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        listen: str | None = None,
    ) -> None:
        """`config=None` runs on the embedded default in `workdir` (pass `listen`)."""
        self.workdir = workdir
        self.extra_env = dict(env or {})
        self.path: Path | None = None
        if config is not None:
            self.path = workdir / "test-mailmux.yaml"
            self.path.write_text(yaml.safe_dump(config))
            listen = config["listen"]
        if listen is None:
            raise ValueError("the embedded default needs an explicit listen address")
        self.url = f"http://{listen}"
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMUX_")}
        env.update(self.extra_env)
        args = [sys.executable, "-m", "mailmux", "serve"]
        if self.path is not None:
            args += ["--config", str(self.path)]
        self.proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=self.workdir,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise RuntimeError("mailmux exited during start:\n" + "".join(self.log))
                self.log.append(line)
                if "mailmux listening on" in line:
                    break
        self._drain = asyncio.create_task(self._drain_log())

    async def _drain_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.log.append(raw.decode())

    async def _finish(self) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), 20)
        if self._drain is not None:
            await self._drain
        return code

    async def stop(self) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc is None:
            return 0
        if self.proc.returncode is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        return await self._finish()

    async def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        assert self.proc is not None
        self.proc.kill()
        await self._finish()


async def send(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}/v1/messages", json=body, headers=headers) as response:
        return response.status, await response.json()


def message(n: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "Sender <sender@example.com>",
        "to": [f"user{n}@example.net"],
        "subject": f"message {n}",
        "text": f"body {n}",
    }
    body.update(extra)
    return body


async def send_many(
    session: aiohttp.ClientSession, url: str, count: int, *, start: int = 0, concurrency: int = 32
) -> list[tuple[int, dict[str, Any]]]:
    """Send `count` messages with bounded concurrency; results in order."""
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> tuple[int, dict[str, Any]]:
        async with slots:
            return await send(session, url, message(n))

    return list(await asyncio.gather(*(one(n) for n in range(start, start + count))))


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll an observable condition until it holds; fail with `what` after `timeout`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await condition():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def accepts_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True
