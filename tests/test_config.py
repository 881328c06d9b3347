"""Configuration: file, ${VAR} references, MAILMUX_ overrides, and one line per error."""

from __future__ import annotations

import copy
import pickle
import socket
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from mailmux.config import (
    VENDOR_KINDS,
    Config,
    ConfigError,
    RetrySettings,
    VendorConfig,
    default_config,
    load_config,
)

KINDS = ", ".join(VENDOR_KINDS)

REPO = Path(__file__).resolve().parent.parent

# A small valid file; each rule test breaks one value of it.
VALID: dict[str, Any] = {
    "listen": "127.0.0.1:0",
    "vendors": {
        "primary": {"kind": "sendgrid", "weight": 70, "api_key": "sg-key"},
        "backup": {"kind": "sandbox", "weight": 30},
    },
}


def changed(dotted: str, value: object, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of `data` (default VALID) with the value at `dotted` set."""
    result = copy.deepcopy(VALID if data is None else data)
    *parents, last = dotted.split(".")
    node = result
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return result


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "mailmux.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8"
    )
    return path


def errors_of(
    tmp_path: Path, data: dict[str, Any] | str, env: dict[str, str] | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data), env=env or {})
    return caught.value.errors


# ---------------------------------------------------------------- defaults


def test_default_config_is_two_sandboxes_on_loopback_with_sqlite() -> None:
    config = default_config()

    assert config.listen == "127.0.0.1:8025"
    assert (config.listen_host, config.listen_port, config.is_loopback) == ("127.0.0.1", 8025, True)
    assert config.store == "sqlite:///mailmux.db"
    assert config.sqlite_path == Path("mailmux.db")
    assert config.node_id == socket.gethostname()
    assert config.api_keys == ()
    assert {name: (v.kind, v.weight) for name, v in config.vendors.items()} == {
        "sandbox_a": ("sandbox", 50.0),
        "sandbox_b": ("sandbox", 50.0),
    }
    assert config.vendors["sandbox_a"].api_key is None
    assert config.vendors["sandbox_a"].base_url is None


def test_defaults_of_every_section() -> None:
    config = default_config()

    assert config.limits.model_dump() == {
        "max_message_bytes": 26214400,
        "max_attachment_bytes": 26214400,
        "max_recipients": 1000,
        "max_request_bytes": 36000000,
        "header_timeout": 15.0,
        "idle_timeout": 75.0,
        "body_timeout": 60.0,
        "max_connections": 4096,
    }
    assert config.delivery.attempt_timeout == 10.0
    assert config.delivery.ambiguous == {"default": "resend"}
    assert config.health.model_dump() == {
        "consecutive_failures": 5,
        "window_seconds": 30.0,
        "min_requests": 20,
        "failure_rate": 0.5,
        "latency_p90_seconds": 2.0,
        "base_ejection_seconds": 30.0,
        "max_ejection_seconds": 300.0,
    }
    assert config.retry.model_dump() == {
        "base_delay": 1.0,
        "max_delay": 300.0,
        "max_age": 259200.0,
        "poll_interval": 1.0,
        "lease_seconds": 60.0,
        "batch_size": 100,
        "concurrency": 100,
        "reserved": None,  # a tenth of concurrency, at most 10
    }
    assert config.idempotency.retention_seconds == 86400.0
    vendor = config.vendors["sandbox_b"]
    assert (vendor.fallback, vendor.pool_size, vendor.connect_timeout) == (True, 100, 5.0)


def test_config_objects_are_frozen() -> None:
    config = default_config()

    with pytest.raises(pydantic.ValidationError):
        config.listen = "0.0.0.0:1"
    with pytest.raises(pydantic.ValidationError):
        config.vendors["sandbox_a"].weight = 0


def test_no_path_and_no_file_loads_the_default_with_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    config = load_config(None, env={"MAILMUX_VENDORS__SANDBOX_A__WEIGHT": "0"})

    assert config.vendors["sandbox_a"].weight == 0.0
    assert config.vendors["sandbox_b"].weight == 50.0
    assert load_config(None, env={}) == default_config()


def test_no_path_reads_mailmux_yaml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, VALID)
    monkeypatch.chdir(tmp_path)

    config = load_config(None, env={})

    assert sorted(config.vendors) == ["backup", "primary"]


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing, env={})

    assert caught.value.errors == [f"{missing}: no such file"]


# ---------------------------------------------------------------- a full file


FULL = """\
listen: "[::1]:9000"
store: sqlite:////var/lib/mailmux/spool.db
node_id: node-7
api_keys: [token-a, token-b]
limits:
  max_message_bytes: 10MiB
  max_attachment_bytes: 512KB
  max_recipients: 50
  max_request_bytes: 14MB
  header_timeout: 5
  idle_timeout: 30
  body_timeout: 120
  max_connections: 512
delivery:
  attempt_timeout: 4.5
  ambiguous: {default: assume_sent, otp: resend}
health:
  consecutive_failures: 3
  window_seconds: 10
  min_requests: 5
  failure_rate: 1
  latency_p90_seconds: null
  base_ejection_seconds: 5
  max_ejection_seconds: 5
retry:
  base_delay: 0.5
  max_delay: 60
  max_age: 3600
  poll_interval: 0.25
  lease_seconds: 30
  batch_size: 10
  concurrency: 4
  reserved: 1
idempotency:
  retention_seconds: 600
vendors:
  primary:
    kind: sendgrid
    weight: 2.5
    fallback: false
    api_key: sg-secret
    base_url: http://127.0.0.1:9001/
    pool_size: 8
    connect_timeout: 1.5
  spare:
    kind: sandbox
    weight: 0
"""


def test_full_file_sets_every_value(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env={})

    assert (config.listen_host, config.listen_port, config.is_loopback) == ("::1", 9000, True)
    assert config.sqlite_path == Path("/var/lib/mailmux/spool.db")
    assert config.node_id == "node-7"
    assert config.api_keys == ("token-a", "token-b")
    assert config.limits.model_dump() == {
        "max_message_bytes": 10 * 1024 * 1024,
        "max_attachment_bytes": 512_000,
        "max_recipients": 50,
        "max_request_bytes": 14_000_000,
        "header_timeout": 5.0,
        "idle_timeout": 30.0,
        "body_timeout": 120.0,
        "max_connections": 512,
    }
    assert config.delivery.attempt_timeout == 4.5
    assert config.delivery.ambiguous == {"default": "assume_sent", "otp": "resend"}
    assert config.health.model_dump() == {
        "consecutive_failures": 3,
        "window_seconds": 10.0,
        "min_requests": 5,
        "failure_rate": 1.0,
        "latency_p90_seconds": None,
        "base_ejection_seconds": 5.0,
        "max_ejection_seconds": 5.0,
    }
    assert config.retry.model_dump() == {
        "base_delay": 0.5,
        "max_delay": 60.0,
        "max_age": 3600.0,
        "poll_interval": 0.25,
        "lease_seconds": 30.0,
        "batch_size": 10,
        "concurrency": 4,
        "reserved": 1,
    }
    assert config.idempotency.retention_seconds == 600.0
    assert config.vendors["primary"].model_dump(exclude_none=True) == {
        "kind": "sendgrid",
        "weight": 2.5,
        "fallback": False,
        "api_key": "sg-secret",
        "base_url": "http://127.0.0.1:9001",  # trailing slash dropped
        "pool_size": 8,
        "connect_timeout": 1.5,
    }
    assert config.vendors["spare"].weight == 0.0


def test_sendgrid_base_url_defaults_per_kind(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env={})

    assert config.vendors["primary"].base_url == "https://api.sendgrid.com"


def test_ambiguous_gets_a_default_when_only_classes_are_listed(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, changed("delivery.ambiguous", {"otp": "assume_sent"})), env={}
    )

    assert config.delivery.ambiguous == {"default": "resend", "otp": "assume_sent"}


@pytest.mark.parametrize(
    ("store", "sqlite_path"),
    [
        ("sqlite:///data/mailmux.db", Path("data/mailmux.db")),
        ("sqlite:////abs/mailmux.db", Path("/abs/mailmux.db")),
        ("postgresql://mailmux@db:5432/mailmux", None),
        ("postgres://mailmux@db/mailmux", None),
    ],
)
def test_store_urls(tmp_path: Path, store: str, sqlite_path: Path | None) -> None:
    config = load_config(write(tmp_path, changed("store", store)), env={})

    assert config.store == store
    assert config.sqlite_path == sqlite_path


@pytest.mark.parametrize(
    ("listen", "host", "port", "loopback"),
    [
        ("127.0.0.1:8025", "127.0.0.1", 8025, True),
        ("127.9.9.9:1", "127.9.9.9", 1, True),
        ("localhost:0", "localhost", 0, True),
        ("[::1]:65535", "::1", 65535, True),
        ("0.0.0.0:8025", "0.0.0.0", 8025, False),
        ("[::]:8025", "::", 8025, False),
        ("mail.internal:25", "mail.internal", 25, False),
    ],
)
def test_listen_is_parsed(
    tmp_path: Path, listen: str, host: str, port: int, loopback: bool
) -> None:
    config = load_config(write(tmp_path, changed("listen", listen)), env={})

    assert (config.listen_host, config.listen_port, config.is_loopback) == (host, port, loopback)


# ---------------------------------------------------------------- ${VAR} references


def test_references_are_replaced_from_env(tmp_path: Path) -> None:
    data = changed("vendors.primary.api_key", "${SENDGRID_API_KEY}")
    data = changed("node_id", "node-${REGION:-eu}-${INDEX:-0}", data)
    data = changed("api_keys", ["${TOKEN}", "literal-$${NOT_A_VAR}"], data)
    data = changed("vendors.primary.weight", "${PRIMARY_WEIGHT}", data)

    config = load_config(
        write(tmp_path, data),
        env={"SENDGRID_API_KEY": "sg-123", "TOKEN": "t1", "INDEX": "", "PRIMARY_WEIGHT": "12.5"},
    )

    assert config.vendors["primary"].api_key == "sg-123"
    assert config.node_id == "node-eu-0"  # default for unset REGION and for empty INDEX
    assert config.api_keys == ("t1", "literal-${NOT_A_VAR}")
    assert config.vendors["primary"].weight == 12.5


def test_set_variable_wins_over_its_default(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, changed("node_id", "${NODE:-fallback}")), env={"NODE": "n2"}
    )

    assert config.node_id == "n2"


def test_missing_variable_names_the_variable_and_the_path(tmp_path: Path) -> None:
    data = changed("vendors.primary.api_key", "${SENDGRID_API_KEY}")
    data = changed("api_keys", ["ok", "${API_TOKEN}"], data)

    assert errors_of(tmp_path, data) == [
        "${SENDGRID_API_KEY} at vendors.primary.api_key: environment variable is not set",
        "${API_TOKEN} at api_keys[1]: environment variable is not set",
    ]


def test_missing_variable_in_a_number_is_reported_once(tmp_path: Path) -> None:
    """The unreplaced text would also fail as a number; only the cause is reported."""
    assert errors_of(tmp_path, changed("vendors.primary.weight", "${W}")) == [
        "${W} at vendors.primary.weight: environment variable is not set"
    ]


def test_malformed_references_are_errors(tmp_path: Path) -> None:
    data = changed("node_id", "${not a name}")
    data = changed("vendors.primary.api_key", "${OPEN", data)

    assert errors_of(tmp_path, data) == [
        "${OPEN at vendors.primary.api_key: no closing }",
        "${not a name} at node_id: not a reference; write ${NAME} or ${NAME:-default}, "
        "or $${ for a literal ${",
    ]


# ---------------------------------------------------------------- MAILMUX_ overrides


def test_override_changes_a_nested_value(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env={"MAILMUX_VENDORS__PRIMARY__WEIGHT": "0"})

    assert config.vendors["primary"].weight == 0.0
    assert config.vendors["backup"].weight == 30.0


def test_override_changes_a_top_level_value(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env={"MAILMUX_LISTEN": "[::1]:8030"})

    assert (config.listen_host, config.listen_port) == ("::1", 8030)


def test_override_creates_keys_and_sections_not_in_the_file(tmp_path: Path) -> None:
    env = {
        "MAILMUX_DELIVERY__AMBIGUOUS__OTP": "assume_sent",
        "MAILMUX_HEALTH__LATENCY_P90_SECONDS": "null",
        "MAILMUX_VENDORS__THIRD__KIND": "sandbox",
        "MAILMUX_VENDORS__THIRD__WEIGHT": "5",
        "MAILMUX_VENDORS__BACKUP__FALLBACK": "false",
        "MAILMUX_API_KEYS": "one, two",
        "MAILMUX_LIMITS__MAX_MESSAGE_BYTES": "1MiB",
        "UNRELATED": "ignored",
    }

    config = load_config(write(tmp_path, VALID), env=env)

    assert config.delivery.ambiguous == {"default": "resend", "otp": "assume_sent"}
    assert config.health.latency_p90_seconds is None
    assert (config.vendors["third"].kind, config.vendors["third"].weight) == ("sandbox", 5.0)
    assert config.vendors["backup"].fallback is False
    assert config.api_keys == ("one", "two")
    assert config.limits.max_message_bytes == 1024 * 1024


def test_override_replaces_a_reference_and_is_taken_literally(tmp_path: Path) -> None:
    data = changed("vendors.primary.api_key", "${SENDGRID_API_KEY}")

    config = load_config(write(tmp_path, data), env={"MAILMUX_VENDORS__PRIMARY__API_KEY": "${RAW}"})

    assert config.vendors["primary"].api_key == "${RAW}"


def test_override_with_a_bad_value_names_path_and_variable(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID, env={"MAILMUX_VENDORS__PRIMARY__WEIGHT": "-1"}) == [
        "vendors.primary.weight: must be ≥ 0 (got '-1') (from MAILMUX_VENDORS__PRIMARY__WEIGHT)"
    ]
    assert errors_of(tmp_path, VALID, env={"MAILMUX_RETRY__BATCH_SIZE": "lots"}) == [
        "retry.batch_size: must be a whole number (got 'lots') (from MAILMUX_RETRY__BATCH_SIZE)"
    ]


def test_override_of_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID, env={"MAILMUX_HEALTH__WINDOW": "5"}) == [
        "health.window: unknown key (did you mean window_seconds?) (from MAILMUX_HEALTH__WINDOW)"
    ]


def test_override_below_a_single_value_or_with_an_empty_level_is_an_error(tmp_path: Path) -> None:
    env = {"MAILMUX_LISTEN__PORT": "1", "MAILMUX_RETRY____BATCH_SIZE": "1"}

    assert errors_of(tmp_path, VALID, env=env) == [
        "MAILMUX_LISTEN__PORT: listen is not a section",
        "MAILMUX_RETRY____BATCH_SIZE: empty level (levels are separated by a double underscore)",
    ]


# ---------------------------------------------------------------- one line per rule


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("vendors.primary.weight", -1, "vendors.primary.weight: must be ≥ 0 (got -1)"),
        (
            "vendors.primary.weight",
            float("nan"),
            "vendors.primary.weight: must be a finite number (got nan)",
        ),
        (
            "vendors.primary.weight",
            float("inf"),
            "vendors.primary.weight: must be a finite number (got inf)",
        ),
        (
            "vendors.primary.weight",
            "heavy",
            "vendors.primary.weight: must be a number (got 'heavy')",
        ),
        ("vendors.primary.weight", True, "vendors.primary.weight: must be a number (got true)"),
        (
            "vendors.primary.kind",
            "sendgird",
            f"vendors.primary.kind: must be one of {KINDS} (got 'sendgird')",
        ),
        ("vendors.primary.api_key", None, "vendors.primary.api_key: required for kind sendgrid"),
        ("vendors.primary.api_key", "", "vendors.primary.api_key: must not be empty"),
        ("vendors.backup.api_key", "k", "vendors.backup.api_key: not allowed for kind sandbox"),
        (
            "vendors.backup.base_url",
            "http://x",
            "vendors.backup.base_url: not allowed for kind sandbox",
        ),
        (
            "vendors.primary.base_url",
            "ftp://mail",
            "vendors.primary.base_url: must be an http:// or https:// URL (got 'ftp://mail')",
        ),
        ("vendors.primary.pool_size", 0, "vendors.primary.pool_size: must be ≥ 1 (got 0)"),
        (
            "vendors.primary.connect_timeout",
            0,
            "vendors.primary.connect_timeout: must be > 0 (got 0)",
        ),
        (
            "vendors.primary.fallback",
            "maybe",
            "vendors.primary.fallback: must be true or false (got 'maybe')",
        ),
        (
            "listen",
            "8025",
            "listen: must be host:port, e.g. 127.0.0.1:8025 or [::1]:8025 (got '8025')",
        ),
        ("listen", 8025, "listen: must be host:port, e.g. 127.0.0.1:8025 (got 8025)"),
        (
            "listen",
            "::1:8025",
            "listen: an IPv6 address needs brackets, e.g. [::1]:8025 (got '::1:8025')",
        ),
        (
            "listen",
            "[nonsense]:1",
            "listen: must be host:port, e.g. 127.0.0.1:8025 or [::1]:8025 (got '[nonsense]:1')",
        ),
        ("listen", "127.0.0.1:70000", "listen: port must be 0-65535 (got '127.0.0.1:70000')"),
        (
            "store",
            "mysql://db/x",
            "store: must be sqlite:///path or postgresql://... (got 'mysql'...)",
        ),
        ("store", "sqlite:///", "store: needs a file path, e.g. sqlite:///mailmux.db"),
        ("node_id", "", "node_id: must not be empty"),
        ("api_keys", ["ok", ""], "api_keys[1]: must not be empty"),
        ("vendors", {}, "vendors: at least one vendor is required"),
        (
            "vendors",
            {"a": {"kind": "sandbox", "weight": 0}, "b": {"kind": "sandbox", "weight": 0}},
            "vendors: at least one vendor needs weight > 0, "
            "otherwise no vendor would ever be tried first",
        ),
        (
            "vendors",
            {"Primary": {"kind": "sandbox", "weight": 1}},
            "vendors.Primary: vendor names must match [a-z0-9_]+ (got 'Primary')",
        ),
        (
            "retry.lease_seconds",
            10,
            "retry.lease_seconds: must be > the longest attempt timeout (10), "
            "or a lease can run out during an attempt (got 10)",
        ),
        (
            "health.max_ejection_seconds",
            10,
            "health.max_ejection_seconds: must be ≥ base_ejection_seconds (30) (got 10)",
        ),
        (
            "limits.max_request_bytes",
            "1MB",
            "limits.max_request_bytes: must be ≥ max_message_bytes (26214400), "
            "or the largest allowed message cannot arrive (got 1000000)",
        ),
        (
            "limits.max_message_bytes",
            "25 megs",
            "limits.max_message_bytes: must be a size in bytes such as 26214400, 25MiB or 512KB "
            "(got '25 megs')",
        ),
        ("limits.max_recipients", 0, "limits.max_recipients: must be ≥ 1 (got 0)"),
        ("limits.header_timeout", 0, "limits.header_timeout: must be > 0 (got 0)"),
        ("limits.idle_timeout", 0, "limits.idle_timeout: must be > 0 (got 0)"),
        ("limits.body_timeout", "soon", "limits.body_timeout: must be a number (got 'soon')"),
        ("limits.max_connections", 0, "limits.max_connections: must be ≥ 1 (got 0)"),
        (
            "delivery.ambiguous",
            {"otp": "guess"},
            "delivery.ambiguous.otp: must be one of resend, assume_sent (got 'guess')",
        ),
        (
            "delivery.ambiguous",
            {"OTP": "resend"},
            "delivery.ambiguous.OTP: traffic class names must match [a-z0-9_-]+ (got 'OTP')",
        ),
        ("delivery.attempt_timeout", -1, "delivery.attempt_timeout: must be > 0 (got -1)"),
        ("health.failure_rate", 0, "health.failure_rate: must be > 0 (got 0)"),
        ("health.failure_rate", 1.5, "health.failure_rate: must be ≤ 1 (got 1.5)"),
        ("health.latency_p90_seconds", 0, "health.latency_p90_seconds: must be > 0 (got 0)"),
        ("health.min_requests", 2.5, "health.min_requests: must be a whole number (got 2.5)"),
        (
            "health.consecutive_failures",
            True,
            "health.consecutive_failures: must be a whole number (got true)",
        ),
        ("retry.concurrency", 0, "retry.concurrency: must be ≥ 1 (got 0)"),
        (
            "retry.reserved",
            100,
            "retry.reserved: must be < concurrency (100), or no slot is left for the lowest "
            "class priority (got 100)",
        ),
        ("retry.reserved", -1, "retry.reserved: must be ≥ 0 (got -1)"),
        ("idempotency.retention_seconds", 0, "idempotency.retention_seconds: must be > 0 (got 0)"),
        ("limits", "big", "limits: must be a mapping (got 'big')"),
    ],
)
def test_each_rule_gives_one_line_with_its_path(
    tmp_path: Path, dotted: str, value: object, expected: str
) -> None:
    assert errors_of(tmp_path, changed(dotted, value)) == [expected]


def test_vendor_kind_and_weight_are_required(tmp_path: Path) -> None:
    data = changed("vendors.backup", {"fallback": True})

    assert errors_of(tmp_path, data) == [
        "vendors.backup.kind: required",
        "vendors.backup.weight: required",
    ]


def test_a_file_without_vendors_is_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "listen: 127.0.0.1:0\n") == ["vendors: required"]
    assert errors_of(tmp_path, "") == ["vendors: required"]


def test_several_errors_are_reported_at_once(tmp_path: Path) -> None:
    data = changed("vendors.primary.weight", -1)
    data = changed("vendors.backup.kind", "sandbx", data)
    data = changed("listen", "nowhere", data)
    data = changed("health.failure_rate", 2, data)
    data = changed("node_id", "${NODE}", data)

    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data), env={})
    error = caught.value

    assert error.errors == [
        "${NODE} at node_id: environment variable is not set",
        "listen: must be host:port, e.g. 127.0.0.1:8025 or [::1]:8025 (got 'nowhere')",
        "health.failure_rate: must be ≤ 1 (got 2)",
        "vendors.primary.weight: must be ≥ 0 (got -1)",
        f"vendors.backup.kind: must be one of {KINDS} (got 'sandbx')",
    ]
    assert str(error) == "\n".join(error.errors)


def test_secrets_are_not_echoed_in_errors(tmp_path: Path) -> None:
    data = changed("vendors.primary.api_key", ["sg-very-secret"])
    data = changed("api_keys", [12345], data)

    lines = errors_of(tmp_path, data)

    assert lines == ["api_keys[0]: must be a string", "vendors.primary.api_key: must be a string"]
    assert not any("secret" in line or "12345" in line for line in lines)


def test_config_error_survives_pickling() -> None:
    error = ConfigError(["a: one", "b: two"])

    copied = pickle.loads(pickle.dumps(error))

    assert copied.errors == ["a: one", "b: two"]
    assert str(copied) == "a: one\nb: two"


# ---------------------------------------------------------------- unknown keys and YAML


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    data = changed("vendors.primary.wieght", 5)
    data = changed("retry.lease_second", 30, data)
    data = changed("colour", "blue", data)

    assert errors_of(tmp_path, data) == [
        "retry.lease_second: unknown key (did you mean lease_seconds?)",
        "vendors.primary.wieght: unknown key (did you mean weight?)",
        "colour: unknown key (known keys: listen, store, node_id, api_keys, admin_keys, clients, "
        "ingress, smtp, limits, delivery, "
        "health, retry, idempotency, metrics, reload, notify, vendors, classes, rules)",
    ]


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = "listen: 127.0.0.1:0\nvendors:\n  primary: {kind: sandbox\n  weight: 1\n"
    path = write(tmp_path, text)

    errors = errors_of(tmp_path, text)

    assert len(errors) == 1
    assert errors[0].startswith(f"{path}:4:9: ")  # the line and column where parsing failed
    assert errors[0].endswith("(while parsing a flow mapping on line 3)")  # where it began


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    text = "vendors:\n  a: {kind: sandbox, weight: 1}\nlisten: 127.0.0.1:1\nlisten: 127.0.0.1:2\n"
    path = write(tmp_path, text)

    assert errors_of(tmp_path, text) == [f"{path}:4:1: duplicate key 'listen'"]


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = (
        "vendors:\n  a: &common {kind: sandbox, weight: 1}\n  b:\n    <<: *common\n    weight: 2\n"
    )

    config = load_config(write(tmp_path, text), env={})

    assert (config.vendors["b"].kind, config.vendors["b"].weight) == ("sandbox", 2.0)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- listen\n")

    assert errors_of(tmp_path, "- listen\n") == [
        f"{path}: the top level must be a mapping of settings"
    ]


# ---------------------------------------------------------------- the example file


EXAMPLE = REPO / "mailmux.example.yaml"


EXAMPLE_ENV = {
    "SENDGRID_API_KEY": "sg-example",
    "API_TOKEN": "t",
    "ADMIN_TOKEN": "admin-t",
    "BILLING_KEY": "billing-key",
    "MAILGUN_API_KEY": "mg",
    "POSTMARK_SERVER_TOKEN": "pm",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "MAILJET_API_KEY": "mj",
    "MAILJET_SECRET_KEY": "mj-secret",
    "SMTP_PASSWORD": "pw",
}


def test_a_vendor_attempt_timeout_must_fit_in_the_lease(tmp_path: Path) -> None:
    path = tmp_path / "mailmux.yaml"
    path.write_text(
        "retry: {lease_seconds: 30}\n"
        "vendors:\n"
        "  slow: {kind: sandbox, weight: 1, attempt_timeout: 45}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.errors == [
        "retry.lease_seconds: must be > the longest attempt timeout (45), "
        "or a lease can run out during an attempt (got 30)"
    ]


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)

    assert config.vendors["primary"].api_key == "sg-example"
    assert config.api_keys == ("t",)
    assert config.vendors["primary"].kind == "sendgrid"
    assert config.is_loopback


def test_example_file_shows_every_setting() -> None:
    """Docs cannot drift: every field of every model appears in the example."""
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))

    def missing(model: type[pydantic.BaseModel], data: dict[str, Any], at: str) -> list[str]:
        absent = []
        for name, field in model.model_fields.items():
            if name not in data:
                absent.append(f"{at}{name}")
            elif isinstance(field.annotation, type) and issubclass(
                field.annotation, pydantic.BaseModel
            ):
                absent += missing(field.annotation, data[name], f"{at}{name}.")
        return absent

    assert missing(Config, example, "") == []
    # Kind-specific settings appear in the vendor of their kind: look across all vendors.
    every_vendor: dict[str, Any] = {}
    for vendor in example["vendors"].values():
        every_vendor.update(vendor)
    assert missing(VendorConfig, every_vendor, "vendors.*.") == []


# ---------------------------------------------------------------- clients and ingress


def test_clients_and_ingress_load(tmp_path: Path) -> None:
    data = changed("clients", {"billing": {"key": "k1"}, "AKIA.shop": {"key": "k2"}})
    data = changed("ingress.postmark", {"enabled": False}, data)
    data = changed("ingress.sendgrid.listen", "127.0.0.1:9025", data)

    config = load_config(write(tmp_path, data), env={})

    assert {name: c.key for name, c in config.clients.items()} == {
        "billing": "k1",
        "AKIA.shop": "k2",
    }
    assert "postmark" not in config.ingress.enabled()
    assert config.ingress.enabled()["sendgrid"].listen == "127.0.0.1:9025"
    assert config.client_keys and config.exposed() == []


def test_a_key_names_one_client_only(tmp_path: Path) -> None:
    data = changed("clients", {"billing": {"key": "same"}, "shop": {"key": "same"}})
    data = changed("api_keys", ["same"], data)

    assert errors_of(tmp_path, data) == [
        "clients.shop.key: the same key as clients.billing.key: a key must name one client",
        "api_keys[0]: the same key as clients.billing.key: a key must name one client",
    ]


def test_ingress_knows_only_the_eight_shapes(tmp_path: Path) -> None:
    data = changed("ingress.sendgird", {"enabled": True})

    (error,) = errors_of(tmp_path, data)
    assert error.startswith("ingress.sendgird: unknown key (did you mean sendgrid?)")


def test_a_shapes_own_listener_off_loopback_counts_as_exposed(tmp_path: Path) -> None:
    data = changed("ingress.ses.listen", "0.0.0.0:9026")

    config = load_config(write(tmp_path, data), env={})

    assert config.exposed() == ["ingress.ses.listen: 0.0.0.0:9026"]
    assert not config.client_keys


def test_admin_keys_are_listed_and_never_a_client_key(tmp_path: Path) -> None:
    data = changed("admin_keys", ["adm-1", "shared"], changed("api_keys", ["shared"]))
    assert errors_of(tmp_path, data) == [
        "admin_keys[1]: the same key as api_keys[0]: a key must name one client"
    ]
    config = load_config(write(tmp_path, VALID), env={"MAILMUX_ADMIN_KEYS": "adm-1,adm-2"})
    assert config.admin_keys == ("adm-1", "adm-2")


def test_a_store_password_never_reaches_the_log_line() -> None:
    from mailmux.app import shown_store

    assert shown_store("postgresql://mm:s3cret@db.internal:5432/mail") == (
        "postgresql://mm:***@db.internal:5432/mail"
    )
    assert shown_store("sqlite:///mailmux.db") == "sqlite:///mailmux.db"


@pytest.mark.parametrize(("concurrency", "slots"), [(100, 10), (50, 5), (7, 0), (1000, 10)])
def test_reserved_retry_slots_default_to_a_tenth_of_concurrency_at_most_ten(
    concurrency: int, slots: int
) -> None:
    assert RetrySettings(concurrency=concurrency).reserved_slots == slots
    assert RetrySettings(concurrency=concurrency, reserved=0).reserved_slots == 0
