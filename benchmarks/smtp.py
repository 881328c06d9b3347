"""SMTP submission against the native API, in one run (`make bench-smtp`).

One mailmux process on the server core, with one SendGrid vendor pointed at a
SendGrid emulator (`mailmux emulate --shape sendgrid`) on the load core, and
its SMTP server on (`smtp.listen`, a self-signed certificate made for the
run, 127.0.0.1 allowed without AUTH). Three paths into it, each carrying the
same ~8 KB message (benchmarks/workload.py):

- `native API`: `POST /v1/messages`, 16 keep-alive connections (loadgen.py);
- `SMTP, clear`: 16 persistent SMTP sessions, no TLS, no AUTH;
- `SMTP, STARTTLS + AUTH`: 16 sessions, each STARTTLS and AUTH PLAIN once.

Each SMTP session sends message after message on one connection (RSET /
MAIL / RCPT / DATA), as a service's mail library does (benchmarks/smtp_load.py).
Throughput: closed loop, rounds rotating the order, medians. Latency: open
loop at half the slowest path's rate, p50 per message (an SMTP message from
its RSET to the final reply), and the added p50 of each SMTP path over the
native API. Both generators are Python asyncio clients of similar weight, so
the load core costs the paths alike; wrk is not used here. Everything runs on
127.0.0.1 and every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

import cpu
from bench import STARTUP_TIMEOUT, _free_port, _post, progress
from generators import Generators, Request
from loadgen import LoadResult
from processes import Child, ChildFailed, Children, choose_cores
from run import _python
from runner import run_bench
from workload import API_KEY, mailmux_config, native_body

SESSIONS = 16
RUN_SLACK = 30.0
SMTP_LOAD = Path(__file__).resolve().parent / "smtp_load.py"
#: Any user name goes with a key from `api_keys`.
SMTP_USER = "bench"


@dataclass
class Lane:
    """One path into mailmux: how to load it, and what it measured."""

    name: str
    request: Request | None = None  # the native API, loaded by loadgen.py
    smtp: list[str] | None = None  # smtp_load.py's argv, but for --duration and --rate
    rates: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    failures: int = 0

    def argv(self, generators: Generators, seconds: float, rate: float | None = None) -> list[str]:
        """Closed loop over SESSIONS connections, or open loop at `rate` messages/s."""
        if self.request is not None:
            if rate is None:
                return generators.closed(self.request, SESSIONS, seconds)
            return generators.open(self.request, rate, seconds)
        assert self.smtp is not None
        paced = [] if rate is None else ["--rate", f"{rate:.3f}"]
        return [*self.smtp, "--duration", f"{seconds:g}", *paced]

    def record(self, result: LoadResult) -> None:
        self.failures += result.errors + result.unexpected

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def p50(self) -> float:
        return statistics.median(self.p50s)

    @property
    def p99(self) -> float:
        return statistics.median(self.p99s)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made for this run (cert and key PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def mime_message() -> tuple[bytes, str, str]:
    """The native body as the RFC 5322 message an SMTP client would submit, with its
    envelope sender and recipient."""
    body = native_body()
    message = EmailMessage(policy=SMTP)
    message["From"] = body["from"]
    message["To"] = ", ".join(body["to"])
    message["Subject"] = body["subject"]
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="acme.example")
    message.set_content(body["text"])
    message.add_alternative(body["html"], subtype="html")
    return message.as_bytes(), parseaddr(body["from"])[1], body["to"][0]


def smtp_config(
    port: int, db: Path, emulator: str, smtp_port: int, cert: Path, key: Path
) -> dict[str, object]:
    """The benchmark's usual mailmux (workload.mailmux_config) with its SMTP server on."""
    config = mailmux_config(port, db, emulator)
    config["smtp"] = {
        "listen": f"127.0.0.1:{smtp_port}",
        "hostname": "mailmux.bench",
        "tls_cert_file": str(cert),
        "tls_key_file": str(key),
        "allow_unauthenticated": ["127.0.0.1"],
    }
    return config


class SmtpBench:
    def __init__(self, children: Children, python: str, workdir: Path) -> None:
        self.children = children
        self.python = python
        self.workdir = workdir
        self.cores = choose_cores()
        self.generators = Generators(python, None)  # loadgen.py: as light as smtp_load.py
        native = json.dumps(native_body()).encode()
        (workdir / "native.json").write_bytes(native)
        raw, self.mail_from, self.rcpt_to = mime_message()
        (workdir / "message.eml").write_bytes(raw)
        self.sizes = (len(native), len(raw))
        self.cert, self.key = self_signed(workdir)
        self.half = 0.0
        self.pipelining = False

    def _start(self, name: str, argv: list[str], core: int | None, marker: str) -> Child:
        child = self.children.start(name, argv, core)
        child.wait_for(marker, STARTUP_TIMEOUT)
        return child

    def _smtp_argv(self, port: int, tls: bool) -> list[str]:
        argv = [self.python, str(SMTP_LOAD), "--port", str(port), "--sessions", str(SESSIONS)]
        argv += ["--message-file", str(self.workdir / "message.eml")]
        argv += ["--mail-from", self.mail_from, "--rcpt-to", self.rcpt_to]
        if tls:
            argv += ["--starttls", "--cafile", str(self.cert)]
            argv += ["--user", SMTP_USER, "--password", API_KEY]
        return argv

    def lanes(self, http_port: int, smtp_port: int) -> list[Lane]:
        headers = ("Content-Type: application/json", f"Authorization: Bearer {API_KEY}")
        url = f"http://127.0.0.1:{http_port}/v1/messages"
        native = Request(url, self.workdir / "native.json", headers, 200)
        return [
            Lane(f"native API ({SESSIONS} connections)", request=native),
            Lane(f"SMTP, clear ({SESSIONS} sessions)", smtp=self._smtp_argv(smtp_port, tls=False)),
            Lane("SMTP, STARTTLS + AUTH", smtp=self._smtp_argv(smtp_port, tls=True)),
        ]

    def start(self) -> tuple[Child, int, int]:
        """The emulator on the load core, mailmux on the server core; (mailmux, ports)."""
        emulator_port = _free_port()
        argv = [self.python, "-m", "mailmux", "emulate", "--shape", "sendgrid"]
        self._start("emulator", [*argv, "--port", str(emulator_port)], self.cores.load, "listening")
        http_port, smtp_port = _free_port(), _free_port()
        config = smtp_config(
            http_port,
            self.workdir / "mailmux.db",
            f"http://127.0.0.1:{emulator_port}",
            smtp_port,
            self.cert,
            self.key,
        )
        path = self.workdir / "mailmux.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        argv = [self.python, "-m", "mailmux", "serve", "--config", str(path)]
        mailmux = self._start("mailmux", argv, self.cores.server, "mailmux listening on")
        self._wait_for_banner(smtp_port, mailmux)
        return mailmux, http_port, smtp_port

    def _wait_for_banner(self, port: int, mailmux: Child) -> None:
        """The SMTP server may come up just after the HTTP one logs: wait for its 220."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    banner = sock.recv(512)
                    if banner.startswith(b"220"):
                        self.pipelining = self._offers_pipelining(sock)
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ChildFailed(
                    f"mailmux's SMTP server on 127.0.0.1:{port} did not greet within "
                    f"{STARTUP_TIMEOUT:g}s:\n" + mailmux.log_tail()
                )
            time.sleep(0.05)

    @staticmethod
    def _offers_pipelining(sock: socket.socket) -> bool:
        """Whether the EHLO reply lists PIPELINING (smtp_load.py then pipelines too)."""
        sock.sendall(b"EHLO bench.client\r\n")
        reply = b""
        while not any(line[3:4] == b" " for line in reply.split(b"\r\n")[:-1]):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        sock.sendall(b"QUIT\r\n")
        lines = [line[4:].split(b" ")[0] for line in reply.upper().split(b"\r\n")]
        return b"PIPELINING" in lines

    def _load(self, label: str, argv: list[str], seconds: float) -> LoadResult:
        output = self.children.run(label, argv, self.cores.load, seconds + RUN_SLACK, None)
        return LoadResult.from_output(output)

    def _check(self, lane: Lane, http_port: int) -> None:
        """One message down each path before measuring: a misconfiguration fails here."""
        if lane.smtp is not None:
            argv = [*lane.smtp, "--sessions", "1", "--count", "1", "--duration", "30"]
            output = self.children.run(f"check-{lane.name}", argv, self.cores.load, 60, None)
            result = LoadResult.from_output(output)
            if not result.clean or result.ok != 1:
                raise ChildFailed(f"{lane.name}: the check message was not accepted:\n{output}")
            return
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        url = f"http://127.0.0.1:{http_port}/v1/messages"
        status, body = _post(url, (self.workdir / "native.json").read_bytes(), headers)
        if status != 200 or json.loads(body).get("state") != "sent":
            raise ChildFailed(f"{lane.name}: expected 200 sent, got {status}: {body[:300]!r}")

    def run(self, rounds: int, seconds: float) -> tuple[list[Lane], dict[str, int]]:
        mailmux, http_port, smtp_port = self.start()
        lanes = self.lanes(http_port, smtp_port)
        for lane in lanes:
            self._check(lane, http_port)
        for lane in lanes:  # warm-up
            self._load("warmup", lane.argv(self.generators, 2), 2)
        for index in range(rounds):
            shift = index % len(lanes)
            for lane in lanes[shift:] + lanes[:shift]:
                argv = lane.argv(self.generators, seconds)
                before = cpu.read(self.children.running(), [mailmux])
                result = self._load(f"throughput-{index}", argv, seconds)
                (share,) = cpu.read(self.children.running(), [mailmux]).since(before).watched
                lane.rates.append(result.rate)
                lane.server_cpu.append(share)
                lane.record(result)
                progress(
                    f"round {index + 1}: {lane.name:28} {result.rate:8,.0f} msg/s  "
                    f"mailmux CPU {share:4.0%}  failed {result.errors + result.unexpected}"
                )
        self.half = max(1.0, min(lane.rate for lane in lanes) / 2)
        latency_seconds = max(3.0, seconds / 2)
        for index in range(rounds):
            shift = index % len(lanes)
            for lane in lanes[shift:] + lanes[:shift]:
                argv = lane.argv(self.generators, latency_seconds, self.half)
                result = self._load(f"latency-{index}", argv, latency_seconds)
                lane.p50s.append(result.p50_ms)
                lane.p99s.append(result.p99_ms)
                lane.record(result)
                progress(
                    f"latency {index + 1} at {self.half:,.0f}/s: {lane.name:28} "
                    f"p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms"
                )
        return lanes, _spool(http_port)


def _spool(http_port: int) -> dict[str, int]:
    """The spool's counts after the run: anything not `sent` means a vendor missed some."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/v1/health",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        counts: dict[str, int] = json.loads(response.read())["spool"]
    return counts


def render(bench: SmtpBench, lanes: list[Lane], spool: dict[str, int]) -> str:
    native = lanes[0]
    lines = [
        f"{'path':30} {'msg/s':>8} {'of native':>9} {'mailmux CPU':>11} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'added p50':>10}",
    ]
    for lane in lanes:
        added = "" if lane is native else f"{lane.p50 - native.p50:+10.3f}"
        lines.append(
            f"{lane.name:30} {lane.rate:8,.0f} {lane.rate / native.rate:9.1%} "
            f"{statistics.median(lane.server_cpu):11.0%} {lane.p50:8.3f} {lane.p99:8.3f} "
            f"{added:>10}"
        )
    failures = sum(lane.failures for lane in lanes)
    native_bytes, mime_bytes = bench.sizes
    placement = (
        f"mailmux on core {bench.cores.server}, emulator and load on core {bench.cores.load}"
        if bench.cores.pinned
        else "UNPINNED (needs 2 cores and taskset): not one-core figures"
    )
    lines += [
        "",
        f"latency: open loop at {bench.half:,.0f} msg/s (half the slowest path); "
        "added p50 = path p50 - native API p50",
        f"message: {native_bytes:,} bytes of JSON, {mime_bytes:,} bytes of MIME; "
        f"SMTP commands {'pipelined' if bench.pipelining else 'in lockstep (no PIPELINING)'}",
        f"{placement}; failed messages: {failures}",
        "spool after the run: " + ", ".join(f"{k} {n}" for k, n in spool.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (~30 s)")
    args = parser.parse_args(argv)
    rounds, seconds = (1, 3.0) if args.quick else (3, 8.0)

    def measure(children: Children, workdir: Path) -> str:
        bench = SmtpBench(children, _python(), workdir)
        lanes, spool = bench.run(rounds, seconds)
        return render(bench, lanes, spool)

    return run_bench("smtp", measure)


if __name__ == "__main__":
    sys.exit(main())
