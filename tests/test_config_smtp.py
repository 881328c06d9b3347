"""The `smtp:` section: defaults, when TLS is required, and what counts as exposed."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailmux.config import ConfigError, load_config

VENDORS = {"vendors": {"a": {"kind": "sandbox", "weight": 1}}}


def load(tmp_path: Path, smtp: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "mailmux.yaml"
    path.write_text(yaml.safe_dump({**VENDORS, "smtp": smtp}))
    return load_config(path, env=env or {})


def errors(tmp_path: Path, smtp: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, smtp)
    return caught.value.errors


def test_off_by_default_with_loopback_trusted(tmp_path: Path) -> None:
    smtp = load(tmp_path, {}).smtp

    assert not smtp.enabled
    assert smtp.allow_unauthenticated == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )
    assert smtp.auth_failures == 5


def test_tls_is_not_required_on_loopback_and_required_elsewhere(tmp_path: Path) -> None:
    assert not load(tmp_path, {"listen": "127.0.0.1:2525"}).smtp.tls_required
    config = load(
        tmp_path,
        {"listen": "0.0.0.0:587", "tls_cert_file": "c.pem", "tls_key_file": "k.pem"},
    )
    assert config.smtp.tls_required
    assert config.exposed() == ["smtp.listen: 0.0.0.0:587"]


def test_tls_required_off_loopback_needs_a_certificate(tmp_path: Path) -> None:
    assert errors(tmp_path, {"listen": "0.0.0.0:587"}) == [
        "smtp.require_tls: TLS is required (the default off loopback) but STARTTLS needs "
        "tls_cert_file and tls_key_file; set them, or require_tls: false"
    ]
    config = load(tmp_path, {"listen": "0.0.0.0:587", "require_tls": False})
    assert not config.smtp.tls_required


def test_implicit_tls_needs_a_certificate_and_the_key_goes_with_it(tmp_path: Path) -> None:
    assert errors(tmp_path, {"listen_tls": "127.0.0.1:465"}) == [
        "smtp.listen_tls: implicit TLS needs tls_cert_file and tls_key_file"
    ]
    assert errors(tmp_path, {"tls_cert_file": "c.pem"}) == [
        "smtp.tls_key_file: tls_cert_file and tls_key_file go together"
    ]


def test_bad_listen_and_networks_are_reported_by_path(tmp_path: Path) -> None:
    found = errors(tmp_path, {"listen": "2525", "allow_unauthenticated": ["10.0.0.0/33"]})
    assert [line.split(":", 1)[0] for line in found] == [
        "smtp.listen",
        "smtp.allow_unauthenticated[0]",
    ]


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "MAILMUX_SMTP__LISTEN": "127.0.0.1:2525",
        "MAILMUX_SMTP__ALLOW_UNAUTHENTICATED": "10.0.0.0/8, ::1",
        "MAILMUX_SMTP__AUTH_FAILURES": "3",
    }
    smtp = load(tmp_path, {"listen_tls": None}, env).smtp

    assert smtp.listen == "127.0.0.1:2525"
    assert [str(n) for n in smtp.allow_unauthenticated] == ["10.0.0.0/8", "::1/128"]
    assert smtp.auth_failures == 3
    off = load(tmp_path, {"listen": "127.0.0.1:2525"}, {"MAILMUX_SMTP__LISTEN": "off"})
    assert not off.smtp.enabled
