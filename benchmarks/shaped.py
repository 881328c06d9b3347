"""The SendGrid-shaped endpoint against the native API, in one run (`make bench-shaped`).

Two mailmux processes, measured one at a time on the server core:

- `sendgrid`: one SendGrid vendor → a SendGrid emulator. `POST /v3/mail/send`
  there is passed through (the caller's body goes to the vendor unchanged);
  the native `POST /v1/messages` is translated to SendGrid's body.
- `mailgun`: one Mailgun vendor → a Mailgun emulator. `POST /v3/mail/send`
  there is translated (SendGrid body → Message → Mailgun multipart), as is
  the native API.

Each shaped path is compared with the native API to the same vendor, so both
sides of a ratio pay the same outbound cost: throughput (closed loop, 64
connections, rounds alternating, medians) and added p50 at half the native
rate (open loop; p50 minus the p50 of the same body sent straight to the
emulator). Targets (issue 7): translated ≥ 85 % of native, pass-through ≥
native. Everything runs on 127.0.0.1 and every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import STARTUP_TIMEOUT, _free_port, _post, progress
from generators import Generators, Request, find_wrk
from loadgen import LoadResult
from processes import ChildFailed, Children, choose_cores
from run import _python
from runner import run_bench
from workload import API_KEY, VENDOR_KEY, native_body, sendgrid_body

CONNECTIONS = 64
RUN_SLACK = 30.0


@dataclass
class Lane:
    """One request path: what it sends where, and what it measured."""

    name: str
    request: Request
    rates: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    failures: int = 0

    def record_rate(self, result: LoadResult) -> None:
        self.rates.append(result.rate)
        self.failures += result.errors + result.unexpected

    def record_p50(self, result: LoadResult) -> None:
        self.p50s.append(result.p50_ms)
        self.failures += result.errors + result.unexpected

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def p50(self) -> float:
        return statistics.median(self.p50s)


def _config(port: int, db: Path, kind: str, emulator: str) -> dict[str, object]:
    vendor: dict[str, object] = {
        "kind": kind,
        "api_key": VENDOR_KEY,
        "base_url": emulator,
        "weight": 1,
        "pool_size": 2000,
    }
    if kind == "mailgun":
        vendor["domain"] = "mg.bench.example"
    return {
        "listen": f"127.0.0.1:{port}",
        "store": f"sqlite:///{db}",
        "node_id": "bench",
        "api_keys": [API_KEY],
        "vendors": {kind: vendor},
    }


class ShapedBench:
    def __init__(self, children: Children, generators: Generators, workdir: Path) -> None:
        self.children = children
        self.generators = generators
        self.workdir = workdir
        self.cores = choose_cores()
        (workdir / "native.json").write_bytes(json.dumps(native_body()).encode())
        (workdir / "sendgrid.json").write_bytes(json.dumps(sendgrid_body()).encode())
        self.direct: Lane | None = None
        self.half = 0.0

    def _request(self, url: str, body: str, expect: int, key: str = API_KEY) -> Request:
        headers = ("Content-Type: application/json", f"Authorization: Bearer {key}")
        return Request(url, self.workdir / body, headers, expect)

    def _start(self, name: str, argv: list[str], core: int | None, marker: str) -> None:
        child = self.children.start(name, argv, core)
        child.wait_for(marker, STARTUP_TIMEOUT)

    def _emulator(self, shape: str) -> str:
        port = _free_port()
        argv = [self.generators.python, "-m", "mailmux", "emulate", "--shape", shape]
        self._start(f"emulator-{shape}", [*argv, "--port", str(port)], self.cores.load, "listening")
        return f"http://127.0.0.1:{port}"

    def _mailmux(self, kind: str, emulator: str) -> str:
        port = _free_port()
        path = self.workdir / f"{kind}.yaml"
        path.write_text(json.dumps(_config(port, self.workdir / f"{kind}.db", kind, emulator)))
        argv = [self.generators.python, "-m", "mailmux", "serve", "--config", str(path)]
        self._start(f"mailmux-{kind}", argv, self.cores.server, "mailmux listening on")
        return f"http://127.0.0.1:{port}"

    def _load(self, label: str, argv: list[str], seconds: float) -> LoadResult:
        output = self.children.run(label, argv, self.cores.load, seconds + RUN_SLACK, None)
        return LoadResult.from_output(output)

    def run(self, rounds: int, seconds: float) -> list[tuple[Lane, Lane]]:
        sendgrid_emulator = self._emulator("sendgrid")
        mailgun_emulator = self._emulator("mailgun")
        via_sendgrid = self._mailmux("sendgrid", sendgrid_emulator)
        via_mailgun = self._mailmux("mailgun", mailgun_emulator)
        direct = Lane(
            "SendGrid emulator, direct",
            self._request(f"{sendgrid_emulator}/v3/mail/send", "sendgrid.json", 202, VENDOR_KEY),
        )
        pairs = [
            (
                Lane(
                    "native API → SendGrid",
                    self._request(f"{via_sendgrid}/v1/messages", "native.json", 200),
                ),
                Lane(
                    "SendGrid shape, passed through",
                    self._request(f"{via_sendgrid}/v3/mail/send", "sendgrid.json", 202),
                ),
            ),
            (
                Lane(
                    "native API → Mailgun",
                    self._request(f"{via_mailgun}/v1/messages", "native.json", 200),
                ),
                Lane(
                    "SendGrid shape → Mailgun, translated",
                    self._request(f"{via_mailgun}/v3/mail/send", "sendgrid.json", 202),
                ),
            ),
        ]
        for path in [direct, *(p for pair in pairs for p in pair)]:
            request = path.request
            headers = dict(h.split(": ", 1) for h in request.headers)
            status, body = _post(request.url, request.body_file.read_bytes(), headers)
            if status != request.expect:
                raise ChildFailed(f"{path.name}: expected {request.expect}, got {status}: {body!r}")
        for native, shaped in pairs:
            for path in (native, shaped):  # warm-up
                self._load("warmup", self.generators.closed(path.request, CONNECTIONS, 2), 2)
            for index in range(rounds):
                for path in (native, shaped) if index % 2 == 0 else (shaped, native):
                    argv = self.generators.closed(path.request, CONNECTIONS, seconds)
                    result = self._load(f"throughput-{index}", argv, seconds)
                    path.record_rate(result)
                    progress(f"round {index + 1}: {path.name:38} {result.rate:8,.0f} req/s")
        half = min(native.rate for native, _ in pairs) / 2
        latency_seconds = max(3.0, seconds / 2)
        for index in range(rounds):
            for path in [direct, *(p for pair in pairs for p in pair)]:
                argv = self.generators.open(path.request, half, latency_seconds)
                result = self._load(f"latency-{index}", argv, latency_seconds)
                path.record_p50(result)
                progress(
                    f"latency {index + 1} at {half:,.0f}/s: {path.name:38} "
                    f"p50 {result.p50_ms:.3f} ms"
                )
        self.direct = direct
        self.half = half
        return pairs


def _render(bench: ShapedBench, pairs: list[tuple[Lane, Lane]]) -> str:
    assert bench.direct is not None
    lines = [
        f"{'path':40} {'req/s':>9} {'ratio':>7} {'p50 ms':>8} {'added p50':>10}",
        f"{bench.direct.name:40} {'':>9} {'':>7} {bench.direct.p50:8.3f} {'':>10}",
    ]
    targets = {"passed through": 1.0, "translated": 0.85}
    verdicts = []
    for native, shaped in pairs:
        for path in (native, shaped):
            ratio = path.rate / native.rate
            lines.append(
                f"{path.name:40} {path.rate:9,.0f} {ratio:7.1%} {path.p50:8.3f} "
                f"{path.p50 - bench.direct.p50:10.3f}"
            )
        ratio = shaped.rate / native.rate
        goal = next(v for k, v in targets.items() if k in shaped.name)
        met = "met" if ratio >= goal else "NOT met"
        verdicts.append(f"{shaped.name}: {ratio:.1%} of native (target ≥ {goal:.0%}): {met}")
    failures = sum(p.failures for pair in pairs for p in pair) + bench.direct.failures
    lines += ["", *verdicts, f"open-loop rate {bench.half:,.0f} req/s; failed requests: {failures}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (~30 s)")
    args = parser.parse_args(argv)
    rounds, seconds = (1, 3.0) if args.quick else (3, 8.0)
    wrk, how = find_wrk(install=True)
    if wrk is None:
        progress(f"note: {how}")

    def measure(children: Children, workdir: Path) -> str:
        bench = ShapedBench(children, Generators(_python(), wrk), workdir)
        return _render(bench, bench.run(rounds, seconds))

    return run_bench("shaped", measure)


if __name__ == "__main__":
    sys.exit(main())
