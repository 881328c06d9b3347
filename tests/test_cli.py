"""The `mailmux` command as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import MailmuxProcess, free_port

from mailmux.spool.sqlite import SCHEMA_VERSION


def mailmux(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILMUX_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mailmux", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_prints_every_error_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "vendors:\n  primary: {kind: sendgird, weight: 1}\n  backup: {kind: sandbox, weight: -1}\n"
    )
    result = mailmux("config", "check", str(path), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "mailmux: invalid configuration:"
    assert any(line.startswith("vendors.primary.kind:") for line in lines)
    assert any(line.startswith("vendors.backup.weight:") for line in lines)
    assert "Traceback" not in result.stderr


def test_config_check_accepts_the_embedded_default(tmp_path: Path) -> None:
    result = mailmux("config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sandbox_a (sandbox, weight 50)" in result.stdout


def test_environment_override_changes_one_value(tmp_path: Path) -> None:
    result = mailmux(
        "config", "check", cwd=tmp_path, env={"MAILMUX_VENDORS__SANDBOX_A__WEIGHT": "0"}
    )
    assert result.returncode == 0, result.stderr
    assert "sandbox_a (sandbox, weight 0)" in result.stdout


def test_serve_refuses_a_public_address_without_api_keys(tmp_path: Path) -> None:
    result = mailmux("serve", cwd=tmp_path, env={"MAILMUX_LISTEN": "0.0.0.0:0"})
    assert result.returncode == 1
    assert "api_keys" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_shapes_public_listener_without_client_keys(tmp_path: Path) -> None:
    env = {"MAILMUX_INGRESS__POSTMARK__LISTEN": "0.0.0.0:0"}
    result = mailmux("serve", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "ingress.postmark.listen: 0.0.0.0:0: not a loopback address" in result.stderr


def test_serve_refuses_a_public_smtp_listener_without_client_keys(tmp_path: Path) -> None:
    env = {"MAILMUX_SMTP__LISTEN": "0.0.0.0:0", "MAILMUX_SMTP__REQUIRE_TLS": "false"}
    result = mailmux("serve", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "smtp.listen: 0.0.0.0:0: not a loopback address" in result.stderr


def test_serve_refuses_an_unavailable_store(tmp_path: Path) -> None:
    result = mailmux("serve", cwd=tmp_path, env={"MAILMUX_STORE": "postgresql://db/mail"})
    assert result.returncode == 1
    assert "PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_a_spool_file_it_cannot_open(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-directory" / "mailmux.db"
    result = mailmux("serve", cwd=tmp_path, env={"MAILMUX_STORE": f"sqlite:///{missing}"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"mailmux: cannot start: the spool file {missing}: unable to open database file"
    )


def test_serve_refuses_a_spool_written_by_a_newer_mailmux(tmp_path: Path) -> None:
    spool_file = tmp_path / "mailmux.db"
    with contextlib.closing(sqlite3.connect(spool_file)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.commit()
    result = mailmux("serve", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"mailmux: cannot start: the spool file {spool_file}: its schema version "
        f"{SCHEMA_VERSION + 1} was written by a newer mailmux (this one knows up to "
        f"{SCHEMA_VERSION})"
    )


def test_send_to_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    result = mailmux(
        "send",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        "--from",
        "a@example.com",
        "--to",
        "b@example.com",
        "--text",
        "hi",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("mailmux: cannot reach mailmux at")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_emulator_shape(tmp_path: Path) -> None:
    result = mailmux("emulate", "--shape", "nope", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown shape 'nope'" in result.stderr


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[MailmuxProcess]:
    listen = f"127.0.0.1:{free_port()}"
    process = MailmuxProcess(None, tmp_path, env={"MAILMUX_LISTEN": listen}, listen=listen)
    await process.start()
    yield process
    assert await process.stop() == 0


async def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(mailmux, *args, cwd=cwd)


async def test_send_and_status_against_a_running_server(
    server: MailmuxProcess, tmp_path: Path
) -> None:
    sent = await run(
        "send",
        "--url",
        server.url,
        "--from",
        "Shop <noreply@shop.example>",
        "--to",
        "ada@example.com",
        "--subject",
        "hi",
        "--text",
        "hello",
        cwd=tmp_path,
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent via sandbox_")
    bad = await run(
        "send",
        "--url",
        server.url,
        "--from",
        "not an address",
        "--to",
        "ada@example.com",
        "--text",
        "x",
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("mailmux: invalid_message: from:")
    status = await run("status", "--url", server.url, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "status: ok"
    assert lines[1].split()[:4] == ["VENDOR", "KIND", "WEIGHT", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert set(rows) == {"sandbox_a", "sandbox_b"}
    assert sum(int(row[4]) for row in rows.values()) == 1  # one request routed in all
