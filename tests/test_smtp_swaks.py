"""swaks, the SMTP test tool operators reach for, through mailmux: STARTTLS and implicit
TLS with AUTH into an HTTP ESP emulator and into the SMTP emulator (raw MIME unchanged).

swaks is a Debian package that `.ci/run` installs; without it these tests are skipped,
except under CI (`CI=true`), where a missing swaks is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from pathlib import Path

import pytest
from smtp_kit import (
    CLIENT_KEY,
    CLIENT_NAME,
    SIGNED,
    TIMEOUT,
    mailmux,
    tls_settings,
)
from tls_kit import Certificate, make_certificate

SWAKS = shutil.which("swaks")
if SWAKS is None and os.environ.get("CI") != "true":
    pytest.skip(
        "swaks is not installed (apt-get install -y swaks; .ci/run installs it)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("swaks-tls"))


async def swaks(port: int, *args: str) -> tuple[int, str]:
    """Run swaks against 127.0.0.1:port with AUTH as the test client; (exit code, output)."""
    assert SWAKS is not None, "swaks must be installed under CI"
    process = await asyncio.create_subprocess_exec(
        SWAKS,
        *("--server", f"127.0.0.1:{port}", "--ehlo", "client.test"),
        *("--auth", "PLAIN", "--auth-user", CLIENT_NAME, "--auth-password", CLIENT_KEY),
        *("--from", "shop@example.com", "--to", "ana@example.org"),
        *("--timeout", str(int(TIMEOUT))),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(TIMEOUT * 2):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")


async def test_swaks_with_starttls_delivers_to_an_http_esp(
    tmp_path: Path, certificate: Certificate
) -> None:
    async with mailmux(
        tmp_path, {"esp": "postmark"}, smtp=tls_settings(certificate, require_tls=True)
    ) as mm:
        code, output = await swaks(
            mm.port,
            "--tls",
            *("--header", "Subject: Hello from swaks"),
            *("--header", "X-Mailmux-Tags: swaks"),
            *("--body", "Sent by swaks."),
        )

        assert code == 0, output
        assert "250 2.0.0 Ok: queued as " in output
        [sent] = mm.received("esp")
        assert sent["Subject"] == "Hello from swaks"
        assert sent["To"] == "ana@example.org"
        assert sent["TextBody"].startswith("Sent by swaks.")
        assert sent.get("Tag") == "swaks"


async def test_swaks_over_implicit_tls_passes_raw_mime_through(
    tmp_path: Path, certificate: Certificate
) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}, smtp=tls_settings(certificate)) as mm:
        data = tmp_path / "signed.eml"
        data.write_bytes(SIGNED.removesuffix(b"\r\n"))  # swaks ends the data with CRLF

        code, output = await swaks(mm.tls_port, "--tls-on-connect", "--data", f"@{data}")

        assert code == 0, output
        [relayed] = mm.received("relay")
        assert base64.b64decode(relayed["raw_mime"]) == SIGNED


async def test_swaks_with_a_wrong_key_gets_535(tmp_path: Path, certificate: Certificate) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}, smtp=tls_settings(certificate)) as mm:
        code, output = await swaks(mm.port, "--tls", "--auth-password", "not-the-key")

        assert code != 0
        assert "535 5.7.8 Authentication credentials invalid" in output
        assert mm.total_received() == 0
