"""Peak memory with large messages in flight (`make bench-large`).

Eight concurrent `POST /v1/messages`, each with one 20 MiB attachment
(≈ 28 MB of JSON each, ≈ 224 MB in flight), against a mailmux with one
SendGrid vendor pointed at a SendGrid emulator. Three phases, each on a
fresh mailmux process so that its VmHWM (peak resident memory) is its own:

- sent:    the emulator accepts every message;
- spooled: the emulator answers 503, so every message is durably spooled
  (the retrier does not run meanwhile, so this is the ingress and the spool);
- drained: the spool of the previous phase is retried and sent on restart;
  the retrier leases the whole spool at once, so all of it is in flight.

Each phase runs `--rounds` batches of eight. The target is peak RSS ≤ 2.5 x
the request bytes in flight + 100 MB. Everything runs on 127.0.0.1 and every
process started is stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from processes import Child, Children
from run import _python

API_KEY = "bench-api-key"
MB = 1e6
CONCURRENCY = 8
ATTACHMENT_BYTES = 20 * 2**20


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _body(n: int, attachment: str) -> bytes:
    return json.dumps(
        {
            "from": "Billing <billing@acme.example>",
            "to": [f"customer{n}@example.net"],
            "subject": f"Your statement {n}",
            "text": "Your statement is attached.",
            "attachments": [
                {
                    "filename": "statement.pdf",
                    "content": attachment,
                    "content_type": "application/pdf",
                }
            ],
        }
    ).encode()


class Phase:
    """One mailmux process, its RSS sampled while the phase runs."""

    def __init__(self, children: Children, config: Path, name: str) -> None:
        self.child: Child = children.start(
            f"mailmux-{name}", [_python(), "-m", "mailmux", "serve", "--config", str(config)], None
        )
        self.child.wait_for("mailmux listening on", 30)
        self.idle_kib = self.child.memory().rss_kib
        self.samples: list[int] = []

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.samples.append(self.child.memory().rss_kib)
            await asyncio.sleep(0.01)

    @property
    def peak_mb(self) -> float:
        return self.child.memory().peak_kib * 1024 / MB


async def _send_round(http: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> list[int]:
    async def one(body: bytes) -> int:
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        async with http.post(f"{url}/v1/messages", data=body, headers=headers) as response:
            await response.read()
            return response.status

    return list(await asyncio.gather(*(one(b) for b in bodies)))


async def _run(rounds: int, workdir: Path) -> list[dict[str, Any]]:
    attachment = base64.b64encode(os.urandom(ATTACHMENT_BYTES)).decode()
    bodies = [_body(n, attachment) for n in range(CONCURRENCY)]
    in_flight = sum(map(len, bodies))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMUX_")}
    results: list[dict[str, Any]] = []
    with Children(workdir, env) as children:
        esp_port, control_port, port = _free_port(), _free_port(), _free_port()
        esp = children.start(
            "emulator",
            [
                _python(),
                "-m",
                "mailmux",
                "emulate",
                "--shape",
                "sendgrid",
                "--port",
                str(esp_port),
                "--control-port",
                str(control_port),
            ],
            None,
        )
        esp.wait_for("listening on", 30)
        base = {
            "listen": f"127.0.0.1:{port}",
            "store": f"sqlite:///{workdir / 'spool.db'}",
            "node_id": "bench",
            "api_keys": [API_KEY],
            "limits": {"max_request_bytes": 40_000_000},
            "vendors": {
                "esp": {
                    "kind": "sendgrid",
                    "api_key": "bench",
                    "base_url": f"http://127.0.0.1:{esp_port}",
                    "weight": 1,
                }
            },
        }
        # While requests are measured the retrier stays out of the way (it looks at the
        # spool when it starts, before anything is spooled); the drain retries at once.
        configs = {}
        for name, poll in (("requests", 3600.0), ("drain", 0.1)):
            configs[name] = workdir / f"{name}.yaml"
            retry = {"base_delay": 0.1, "max_delay": 0.2, "poll_interval": poll}
            configs[name].write_text(yaml.safe_dump({**base, "retry": retry}))
        url = f"http://127.0.0.1:{port}"
        control = f"http://127.0.0.1:{control_port}/_emulator/faults"
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for name, faults, expect in (
                ("sent", {}, 200),
                ("spooled", {"status": 503}, 202),
                ("drained", {}, None),
            ):
                async with http.post(control, json=faults) as answer:
                    assert answer.status == 200, await answer.text()
                phase = Phase(children, configs["drain" if expect is None else "requests"], name)
                stop = asyncio.Event()
                sampler = asyncio.create_task(phase.sample(stop))
                started = time.monotonic()
                statuses: list[int] = []
                if expect is None:  # the restarted node drains what the last phase spooled
                    await _drained(http, url)
                else:
                    for _ in range(rounds):
                        statuses += await _send_round(http, url, bodies)
                stop.set()
                await sampler
                peak = phase.peak_mb
                # The drain retries the whole spool at once: all of it is in flight.
                held = in_flight * (rounds if expect is None else 1)
                results.append(
                    {
                        "phase": name,
                        "statuses": sorted(set(statuses)),
                        "ok": expect is None or statuses == [expect] * len(statuses),
                        "idle_mb": phase.idle_kib * 1024 / MB,
                        "peak_mb": peak,
                        "in_flight_mb": held / MB,
                        "target_mb": 2.5 * held / MB + 100,
                        "seconds": time.monotonic() - started,
                    }
                )
                children.stop(phase.child)
    return results


async def _drained(http: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        async with http.get(
            f"{url}/v1/health", headers={"Authorization": f"Bearer {API_KEY}"}
        ) as response:
            report = await response.json()
        if report["spool"]["queued"] == 0:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the spool did not drain within 300 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="batches of eight per phase")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mailmux-bench-large-") as tmp:
        try:
            results = asyncio.run(_run(args.rounds, Path(tmp)))
        except KeyboardInterrupt:
            print("large.py: interrupted; every process it started was stopped", file=sys.stderr)
            return 130
    print(f"{CONCURRENCY} concurrent messages, one {ATTACHMENT_BYTES // 2**20} MiB attachment each")
    print(
        f"{'phase':<9} {'statuses':<10} {'idle MB':>8} {'peak MB':>8} {'in flight MB':>13}"
        f" {'target MB':>10} {'peak/in-flight':>15} {'met':>4}"
    )
    for r in results:
        met = "yes" if r["peak_mb"] <= r["target_mb"] and r["ok"] else "NO"
        print(
            f"{r['phase']:<9} {','.join(map(str, r['statuses'])) or '-':<10} {r['idle_mb']:>8.1f}"
            f" {r['peak_mb']:>8.1f} {r['in_flight_mb']:>13.1f} {r['target_mb']:>10.1f}"
            f" {r['peak_mb'] / r['in_flight_mb']:>15.2f} {met:>4}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
