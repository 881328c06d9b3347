"""The three phases of one benchmark run, against processes it starts and stops itself.

1. throughput: closed loop at fixed concurrency, mailmux and the bare proxy
   alternating over several rounds (order flipped each round, so drift hits
   both alike); medians and their ratio, with each server's share of its
   core, the load core's, and other processes' CPU beside them;
2. latency at half load: open loop at half of mailmux's measured throughput,
   straight to the emulator, via the bare proxy and via mailmux;
3. memory: 1,000 requests in flight through a fresh mailmux (VmHWM counts
   from its start) against an emulator answering after 500 ms, then the same
   for a fresh bare proxy as the reference.

Every request path is tried once before measuring, so a misconfiguration
fails with its answer instead of showing up as a slow figure.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cpu
from generators import Generators, Request
from loadgen import LoadResult
from processes import Child, ChildFailed, Children, Cores
from report import EMULATOR, MAILMUX, PROXY, MemoryRun, Report, Run
from workload import API_KEY, VENDOR_KEY, mailmux_config, native_body, sendgrid_body

STARTUP_TIMEOUT = 30.0
#: Slack on top of a load run's own duration before it counts as hung.
RUN_SLACK = 30.0
#: How often the memory phase reads mailmux's /proc/<pid>/status.
RSS_SAMPLE_EVERY = 0.1
QUIET_CHECK_SECONDS = 1.0
#: What bare_proxy.py logs once listening (not imported: the orchestrator needs no aiohttp).
PROXY_LISTENING = "bare proxy listening on"


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how often; the full plan stays within ~3 minutes, the quick one ~40 s."""

    mode: str
    warmup_seconds: float
    throughput_rounds: int
    throughput_seconds: float
    latency_rounds: int
    latency_seconds: float
    memory_seconds: float
    connections: int = 64
    in_flight: int = 1000
    slow_latency_ms: float = 500.0


FULL = Plan("full", 2, 3, 10, 3, 5, 8)
QUICK = Plan("quick", 1, 1, 3, 1, 3, 3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def progress(text: str) -> None:
    """A line on stderr as each run ends, so a long run shows it is alive."""
    print(text, file=sys.stderr, flush=True)


class Bench:
    """One benchmark run: its processes, its requests, its report."""

    def __init__(
        self, plan: Plan, children: Children, cores: Cores, generators: Generators, workdir: Path
    ) -> None:
        self.plan = plan
        self.children = children
        self.cores = cores
        self.generators = generators
        self.workdir = workdir
        self.python = generators.python
        native = json.dumps(native_body()).encode()
        sendgrid = json.dumps(sendgrid_body()).encode()
        (workdir / "native.json").write_bytes(native)
        (workdir / "sendgrid.json").write_bytes(sendgrid)
        self.emulator_url = f"http://127.0.0.1:{_free_port()}"
        self.proxy_url = f"http://127.0.0.1:{_free_port()}"
        self.report = Report(
            settings={
                **asdict(plan),
                "placement": (
                    f"server under test on core {cores.server}, "
                    f"emulator and load generators on core {cores.load}"
                    if cores.pinned
                    else "UNPINNED (needs 2 cores and taskset): figures are not one-core figures"
                ),
                "closed_loop": generators.closed_loop_name,
                "native_bytes": len(native),
                "sendgrid_bytes": len(sendgrid),
            }
        )

    # -- requests ---------------------------------------------------------

    def _sendgrid_request(self, base: str) -> Request:
        headers = ("Content-Type: application/json", f"Authorization: Bearer {VENDOR_KEY}")
        return Request(f"{base}/v3/mail/send", self.workdir / "sendgrid.json", headers, 202)

    def _mailmux_request(self, base: str) -> Request:
        headers = ("Content-Type: application/json", f"Authorization: Bearer {API_KEY}")
        return Request(f"{base}/v1/messages", self.workdir / "native.json", headers, 200)

    def _check(self, name: str, request: Request) -> None:
        """One request before measuring: a misconfigured path fails here, not as a slow figure."""
        headers = dict(h.split(": ", 1) for h in request.headers)
        status, body = _post(request.url, request.body_file.read_bytes(), headers)
        if status != request.expect:
            raise ChildFailed(f"{name}: expected {request.expect}, got {status}: {body[:300]!r}")
        if request.expect == 200 and json.loads(body).get("state") != "sent":
            raise ChildFailed(f"{name}: the message was not sent: {body[:300]!r}")

    # -- processes --------------------------------------------------------

    def start_emulator(self) -> Child:
        port = self.emulator_url.rsplit(":", 1)[1]
        argv = [self.python, "-m", "mailmux", "emulate", "--shape", "sendgrid", "--port", port]
        child = self.children.start("emulator", argv, self.cores.load)
        child.wait_for("listening on", STARTUP_TIMEOUT)
        return child

    def start_mailmux(self, name: str) -> tuple[Child, str]:
        port = _free_port()
        config = mailmux_config(port, self.workdir / f"{name}.db", self.emulator_url)
        path = self.workdir / f"{name}.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        argv = [self.python, "-m", "mailmux", "serve", "--config", str(path)]
        child = self.children.start(name, argv, self.cores.server)
        child.wait_for("mailmux listening on", STARTUP_TIMEOUT)
        return child, f"http://127.0.0.1:{port}"

    def start_proxy(self) -> Child:
        port = self.proxy_url.rsplit(":", 1)[1]
        script = str(Path(__file__).resolve().parent / "bare_proxy.py")
        upstream = f"{self.emulator_url}/v3/mail/send"
        argv = [self.python, script, "--port", port, "--upstream", upstream]
        child = self.children.start("bare-proxy", argv, self.cores.server)
        child.wait_for(PROXY_LISTENING, STARTUP_TIMEOUT)
        return child

    def _load(
        self,
        label: str,
        argv: list[str],
        seconds: float,
        every: tuple[float, Callable[[], None]] | None = None,
    ) -> LoadResult:
        output = self.children.run(label, argv, self.cores.load, seconds + RUN_SLACK, every)
        return LoadResult.from_output(output)

    # -- phases -----------------------------------------------------------

    def run(self) -> Report:
        self._quiet_check()
        emulator = self.start_emulator()
        mailmux, mailmux_url = self.start_mailmux("mailmux")
        proxy = self.start_proxy()
        requests = {
            EMULATOR: self._sendgrid_request(self.emulator_url),
            PROXY: self._sendgrid_request(self.proxy_url),
            MAILMUX: self._mailmux_request(mailmux_url),
        }
        for name, request in requests.items():
            self._check(name, request)
        servers = {EMULATOR: emulator, PROXY: proxy, MAILMUX: mailmux}
        self.throughput(requests, servers, emulator)
        self.latency(requests)
        self._note_log(mailmux)
        self.children.stop(proxy)
        self.children.stop(mailmux)
        self.memory()
        return self.report

    def _quiet_check(self) -> None:
        """How busy the machine is before anything starts: a noisy neighbour shows up here."""
        before = cpu.read(self.children.running(), [])
        time.sleep(QUIET_CHECK_SECONDS)
        others = cpu.read(self.children.running(), []).since(before).others
        self.report.settings["others_before_cores"] = round(others, 2)
        progress(f"before starting: other processes use {others:.2f} cores")

    def throughput(
        self, requests: dict[str, Request], servers: dict[str, Child], emulator: Child
    ) -> None:
        """Alternate proxy and mailmux (order flipped each round) so drift hits both alike."""
        plan = self.plan
        pair = [PROXY, MAILMUX]
        for name in pair:
            argv = self.generators.closed(requests[name], plan.connections, plan.warmup_seconds)
            self._load(f"warmup-{name}", argv, plan.warmup_seconds)
        for index in range(plan.throughput_rounds):
            for name in pair if index % 2 == 0 else pair[::-1]:
                run = self._closed_run(name, index, requests[name], servers[name], emulator)
                self.report.throughput.append(run)
        # A reference, not a one-core figure: the emulator shares its core with the load.
        run = self._closed_run(EMULATOR, 0, requests[EMULATOR], emulator, emulator)
        self.report.throughput.append(run)

    def _closed_run(
        self, name: str, index: int, request: Request, server: Child, emulator: Child
    ) -> Run:
        seconds = self.plan.throughput_seconds
        argv = self.generators.closed(request, self.plan.connections, seconds)
        before = cpu.read(self.children.running(), [server, emulator])
        result = self._load(f"throughput-{index}-{name}", argv, seconds)
        shares = cpu.read(self.children.running(), [server, emulator]).since(before)
        server_cpu, emulator_cpu = shares.watched
        load_core = shares.cores.get(self.cores.load) if self.cores.load is not None else None
        run = Run(name, index, result, server_cpu, emulator_cpu, shares.others, load_core)
        progress(
            f"throughput round {index + 1}: {name:16} {result.rate:8,.0f} req/s  "
            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
            f"server CPU {server_cpu:4.0%}  load core {load_core or 0:4.0%}  "
            f"others {shares.others:.2f} cores  errors {result.errors + result.unexpected}"
        )
        return run

    def latency(self, requests: dict[str, Request]) -> None:
        """Open loop at half of mailmux's median throughput; the order rotates each round."""
        plan = self.plan
        mailmux_rate = self.report.figures(self.report.throughput)[MAILMUX].rate
        rate = max(1.0, mailmux_rate / 2)
        self.report.half_rate = rate
        names = [EMULATOR, PROXY, MAILMUX]
        for index in range(plan.latency_rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                argv = self.generators.open(requests[name], rate, plan.latency_seconds)
                before = cpu.read(self.children.running(), [])
                result = self._load(f"latency-{index}-{name}", argv, plan.latency_seconds)
                others = cpu.read(self.children.running(), []).since(before).others
                self.report.latency.append(Run(name, index, result, background_cpu=others))
                progress(
                    f"latency round {index + 1} at {rate:,.0f} req/s: {name:16} "
                    f"p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  "
                    f"others {others:.2f} cores  "
                    f"errors {result.errors + result.unexpected}"
                )

    def memory(self) -> None:
        """Fresh servers (VmHWM counts from their start) holding 1,000 slow requests each.

        The bare proxy is measured the same way, as a reference: what the
        stack alone holds for that many requests.
        """
        plan = self.plan
        self._set_faults({"latency_ms": plan.slow_latency_ms})
        mailmux, url = self.start_mailmux("mailmux-memory")
        self._memory_run(MAILMUX, mailmux, self._mailmux_request(url))
        self._note_log(mailmux)
        self.children.stop(mailmux)
        proxy = self.start_proxy()
        self._memory_run(PROXY, proxy, self._sendgrid_request(self.proxy_url))
        self.children.stop(proxy)
        self._set_faults({})

    def _memory_run(self, name: str, server: Child, request: Request) -> None:
        plan = self.plan
        peak = 0
        samples = 0

        def sample() -> None:
            nonlocal peak, samples
            peak = max(peak, server.memory().rss_kib)
            samples += 1

        argv = self.generators.closed(request, plan.in_flight, plan.memory_seconds)
        result = self._load(f"memory-{name}", argv, plan.memory_seconds, (RSS_SAMPLE_EVERY, sample))
        final = server.memory()
        emulator_port = int(self.emulator_url.rsplit(":", 1)[1])
        run = MemoryRun(
            name,
            plan.in_flight,
            plan.slow_latency_ms,
            result,
            max(peak, final.rss_kib),
            final.peak_kib,
            samples,
            server.connections_to(emulator_port),
        )
        self.report.memory.append(run)
        progress(
            f"memory: {name:16} peak {run.peak_mb:.1f} MB, {run.upstream_connections} "
            "upstream connections  "
            f"errors {result.errors + result.unexpected}"
        )

    def _set_faults(self, faults: dict[str, float]) -> None:
        status, body = _post(
            f"{self.emulator_url}/_emulator/faults",
            json.dumps(faults).encode(),
            {"Content-Type": "application/json"},
        )
        if status != 200:
            raise ChildFailed(f"the emulator refused faults {faults}: {status} {body!r}")

    def _note_log(self, child: Child) -> None:
        """Warnings mailmux logged during the load (health ejections, ...) belong in the report."""
        lines = [
            line
            for line in child.log_text().splitlines()
            if " WARNING " in line or " ERROR " in line
        ]
        if lines:
            shown = "; ".join(lines[:3])
            self.report.notes.append(f"{child.name} logged {len(lines)} warnings/errors: {shown}")
