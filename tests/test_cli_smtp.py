"""`mailmux send --smtp` as a user runs it, against mailmux's SMTP emulator (aiosmtpd) in
the test: the envelope and headers it sends, STARTTLS, implicit TLS, AUTH, and how it
reports acceptance, refusals, an unreachable server and bad usage."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from tls_kit import Certificate, make_certificate

from mailmux.emulator import Faults, SmtpEmulator

KEY = "client-key-1"
USER = "billing"
BASE = ("--from", "Shop <noreply@shop.example>", "--subject", "Receipt", "--text", "Thanks.")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, the one the command is told to trust."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


def server_tls(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


async def started(**settings: Any) -> SmtpEmulator:
    emulator = SmtpEmulator(**settings)
    await emulator.start()
    return emulator


@pytest.fixture
async def relay() -> AsyncIterator[SmtpEmulator]:
    emulator = await started()
    yield emulator
    await emulator.stop()


async def send(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mailmux send ARGS` in a process of its own (while the emulator serves this loop)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILMUX_")}
    base.update(env or {})
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mailmux", "send", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stored(emulator: SmtpEmulator) -> list[tuple[dict[str, Any], dict[str, str], bytes]]:
    """Each accepted message: its JSON body, its session headers, its raw MIME."""
    return [
        (m.body, dict(m.headers), base64.b64decode(m.body["raw_mime"])) for m in emulator.messages
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_envelope_headers_and_the_servers_reply(relay: SmtpEmulator, tmp_path: Path) -> None:
    result = await send(
        "--smtp",
        f"127.0.0.1:{relay.port}",
        *BASE,
        "--to",
        "Ana <ana@example.org>",
        "--to",
        "bo@example.net",
        "--cc",
        "chen@example.com",
        "--bcc",
        "audit@example.com",
        "--html",
        "<p>Thanks.</p>",
        "--class",
        "billing",
        "--deadline",
        "90",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    ((body, session, raw),) = stored(relay)
    assert result.stdout == f"250 2.0.0 Ok: queued as {relay.messages[0].id}\n"
    assert result.stderr == ""
    assert body["mail_from"] == "noreply@shop.example"
    assert body["rcpt_to"] == [
        "ana@example.org",
        "bo@example.net",
        "chen@example.com",
        "audit@example.com",
    ]
    assert session["tls"] == "none" and session["login"] == ""
    mime = message_from_bytes(raw, policy=policy.default)
    assert mime["From"] == "Shop <noreply@shop.example>"
    assert mime["To"] == "Ana <ana@example.org>, bo@example.net"
    assert mime["Cc"] == "chen@example.com"
    assert mime["Bcc"] is None and b"audit@" not in raw  # Bcc is the envelope's alone
    assert (mime["X-Mailmux-Class"], mime["X-Mailmux-Deadline"]) == ("billing", "90")
    assert mime["Subject"] == "Receipt" and mime["Date"] and mime["Message-ID"]
    assert mime.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mime.iter_parts()] == ["text/plain", "text/html"]


async def test_starttls_and_auth_plain_from_the_environment(
    certificate: Certificate, tmp_path: Path
) -> None:
    relay = await started(
        auth=(USER, KEY),
        auth_mechanisms=("PLAIN",),
        tls_context=server_tls(certificate),
        require_starttls=True,
    )
    try:
        env = {"MAILMUX_SMTP": f"127.0.0.1:{relay.port}", "MAILMUX_API_KEY": KEY}
        args = ("--smtp", "--starttls", "--cafile", str(certificate.cert), "--user", USER)
        result = await send(*args, *BASE, "--to", "ana@example.org", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        ((_, session, _),) = stored(relay)
        assert (session["tls"], session["login"]) == ("starttls", USER)
    finally:
        await relay.stop()


async def test_implicit_tls_and_auth_login(certificate: Certificate, tmp_path: Path) -> None:
    relay = await started(
        auth=(USER, KEY),
        auth_mechanisms=("LOGIN",),
        tls_context=server_tls(certificate),
        implicit_tls=True,
    )
    try:
        args = ("--smtp", f"127.0.0.1:{relay.port}", "--tls", "--cafile", str(certificate.cert))
        auth = ("--user", USER, "--api-key", KEY)
        result = await send(*args, *auth, *BASE, "--to", "ana@example.org", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("250 ")
        ((_, session, _),) = stored(relay)
        assert (session["tls"], session["login"]) == ("implicit", USER)
    finally:
        await relay.stop()


async def test_an_untrusted_certificate_is_not_accepted(
    certificate: Certificate, tmp_path: Path
) -> None:
    relay = await started(tls_context=server_tls(certificate))
    try:
        args = ("--smtp", f"127.0.0.1:{relay.port}", "--starttls")
        result = await send(*args, *BASE, "--to", "ana@example.org", cwd=tmp_path)
        assert result.returncode == 1
        assert "certificate verify failed" in result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert relay.messages == []
    finally:
        await relay.stop()


async def test_wrong_key_is_535_and_no_key_is_530(certificate: Certificate, tmp_path: Path) -> None:
    relay = await started(auth=(USER, KEY), tls_context=server_tls(certificate))
    try:
        args = (
            "--smtp",
            f"127.0.0.1:{relay.port}",
            "--starttls",
            "--cafile",
            str(certificate.cert),
        )
        wrong = await send(
            *args, "--user", USER, "--api-key", "nope", *BASE, "--to", "a@b.example", cwd=tmp_path
        )
        assert wrong.returncode == 1
        assert wrong.stderr.startswith("mailmux: AUTH refused: 535 5.7.8")
        none = await send(*args, *BASE, "--to", "a@b.example", cwd=tmp_path)
        assert none.returncode == 1
        assert none.stderr.startswith("mailmux: not accepted: 530 5.7.0 Authentication required")
        assert relay.messages == []
    finally:
        await relay.stop()


@pytest.mark.parametrize(
    ("status", "reply", "temporary"),
    [(400, "554 5.6.0 Message content rejected", False), (503, "451 4.3.0", True)],
)
async def test_a_refused_message_shows_the_reply(
    relay: SmtpEmulator, tmp_path: Path, status: int, reply: str, temporary: bool
) -> None:
    relay.set_faults(Faults(status=status))
    result = await send(
        "--smtp", f"127.0.0.1:{relay.port}", *BASE, "--to", "a@b.example", cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"mailmux: not accepted: {reply}")
    assert ("try again later" in result.stderr) is temporary
    assert len(result.stderr.splitlines()) == 1


async def test_refused_recipients(relay: SmtpEmulator, tmp_path: Path) -> None:
    target = ("--smtp", f"127.0.0.1:{relay.port}", *BASE)
    some = await send(*target, "--to", "ok@b.example", "--to", "reject-x@b.example", cwd=tmp_path)
    assert some.returncode == 0, some.stderr
    assert some.stdout.startswith("250 2.0.0 Ok: queued as ")
    assert some.stderr.startswith(
        "mailmux: accepted without these recipients: reject-x@b.example: 550 5.1.1"
    )
    ((body, _, _),) = stored(relay)
    assert body["rcpt_to"] == ["ok@b.example"]
    every = await send(*target, "--to", "deny-y@b.example", cwd=tmp_path)
    assert every.returncode == 1
    assert every.stderr.startswith(
        "mailmux: every recipient was refused: deny-y@b.example: 554 5.7.1"
    )
    assert len(relay.messages) == 1


async def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = await send("--smtp", f"127.0.0.1:{port}", *BASE, "--to", "a@b.example", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"mailmux: cannot reach mailmux at smtp://127.0.0.1:{port}: ")
    assert len(result.stderr.splitlines()) == 1


async def test_starttls_not_offered_sends_nothing(relay: SmtpEmulator, tmp_path: Path) -> None:
    args = ("--smtp", f"127.0.0.1:{relay.port}", "--starttls")
    result = await send(*args, *BASE, "--to", "a@b.example", cwd=tmp_path)
    assert result.returncode == 1
    assert "STARTTLS" in result.stderr
    assert relay.messages == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--smtp", "nohost", "--to", "a@b.example"), "--smtp: must be host:port"),
        (("--smtp", "--to", "a@b.example"), "--smtp: give HOST:PORT, set MAILMUX_SMTP"),
        (("--smtp", "127.0.0.1:1", "--to", "nobody"), "--to: not an email address: 'nobody'"),
        (("--smtp", "127.0.0.1:1", "--to", "a@b.example", "--cc", "x@@y"), "--cc: not an email"),
        (
            ("--smtp", "127.0.0.1:1", "--to", "a@b.example", "--subject", "x\nBcc: c@d.example"),
            "Header values may not contain linefeed",
        ),
        (
            ("--smtp", "127.0.0.1:1", "--to", "a@b.example", "--idempotency-key", "k"),
            "--idempotency-key: SMTP has no idempotency key",
        ),
        (("--starttls", "--to", "a@b.example"), "--starttls: only with --smtp"),
    ],
)
async def test_bad_usage_is_exit_code_2(tmp_path: Path, args: tuple[str, ...], error: str) -> None:
    result = await send("--from", "noreply@shop.example", *args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"mailmux: {error}")
    assert len(result.stderr.splitlines()) == 1


async def test_starttls_and_tls_exclude_each_other(tmp_path: Path) -> None:
    result = await send(
        "--smtp", "127.0.0.1:1", "--starttls", "--tls", *BASE, "--to", "a@b.example", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr
