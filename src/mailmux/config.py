"""mailmux's configuration: what the settings are, and loading them.

The settings are frozen pydantic models; unknown keys are errors, because a
typo that passes silently is a setting that is silently ignored. A rule that
compares two values is checked once both values are valid. `load_config`
takes a file through four steps, and each step collects every problem it
finds before giving up, so an operator fixes a broken file in one pass:

1. parse the YAML (syntax errors and duplicate keys name file:line:column);
2. apply ``MAILMUX_A__B=value`` overrides, one value each: failing over must
   stay a change of one environment variable, as it was at Cloudflare;
3. replace ``${NAME}`` and ``${NAME:-default}`` in the file's strings, so
   secrets stay out of the file;
4. validate into the models.

Steps 1-3 and the wording of every problem live in `mailmux.config_sources`,
which knows nothing of the settings themselves; this module is the one place
that says what a valid configuration is.

Every problem becomes one line that starts with the path of the value.
`ConfigError` deliberately sits outside the delivery error tree: a bad
config stops mailmux before it accepts mail; it is never an attempt's outcome.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailmux.config_classes import ClassConfig, RuleConfig
from mailmux.config_classes import problems as class_and_rule_problems
from mailmux.config_limits import RateLimit, WarmupConfig
from mailmux.config_notify import NotifyTarget
from mailmux.config_smtp import SmtpConfig
from mailmux.config_sources import (
    Location,
    Violations,
    apply_overrides,
    error_lines,
    parse_yaml,
    read_file,
    show_value,
    substitute,
)
from mailmux.config_values import (
    AmbiguousPolicyName,
    ClassName,
    ClientName,
    Count,
    CountOrZero,
    Finite,
    Seconds,
    Text,
    VendorName,
    checked_listen,
    is_loopback,
    null_words,
    one_of,
    split_listen,
)

CONFIG_FILE = "mailmux.yaml"  # looked for in the working directory when no path is given

# What runs when there is no file: a new user can send mail and watch it split.
DEFAULT_YAML = """\
listen: 127.0.0.1:8025
store: sqlite:///mailmux.db
vendors:
  sandbox_a: {kind: sandbox, weight: 50}
  sandbox_b: {kind: sandbox, weight: 50}
"""
_DEFAULT_SOURCE = "<embedded default>"


class ConfigError(Exception):
    """The configuration cannot be used; `errors` holds one readable line per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(self.errors)


#: Settings only some kinds take; every other VendorConfig field is common to all kinds.
KIND_SETTINGS = (
    "api_key",
    "api_secret",
    "base_url",
    "domain",
    "region",
    "access_key_id",
    "secret_access_key",
    "host",
    "port",
    "username",
    "password",
    "tls",
)


@dataclass(frozen=True, slots=True)
class VendorKind:
    """What one kind of vendor demands of its configuration.

    Supporting a new ESP adds one entry to VENDOR_KINDS (and a field to
    VendorConfig and KIND_SETTINGS only for a setting no other kind has).
    Settings outside `required` and `optional` are refused for that kind, so
    a setting that would be silently ignored is reported instead.
    """

    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    default_base_url: str | None = None  # filled in when base_url is allowed and not set


def _http_kind(url: str, *required: str) -> VendorKind:
    return VendorKind(
        required=frozenset(required), optional=frozenset({"base_url"}), default_base_url=url
    )


VENDOR_KINDS: Mapping[str, VendorKind] = MappingProxyType(
    {
        "sandbox": VendorKind(),
        "sendgrid": _http_kind("https://api.sendgrid.com", "api_key"),
        "mailgun": _http_kind("https://api.mailgun.net", "api_key", "domain"),
        "postmark": _http_kind("https://api.postmarkapp.com", "api_key"),
        "sparkpost": _http_kind("https://api.sparkpost.com", "api_key"),
        "resend": _http_kind("https://api.resend.com", "api_key"),
        "mailjet": _http_kind("https://api.mailjet.com", "api_key", "api_secret"),
        "brevo": _http_kind("https://api.brevo.com", "api_key"),
        "smtp": VendorKind(
            required=frozenset({"host"}),
            optional=frozenset({"port", "username", "password", "tls"}),
        ),
        # base_url defaults to the region's endpoint; keys default to AWS's credential chain.
        "ses": VendorKind(
            required=frozenset({"region"}),
            optional=frozenset({"base_url", "access_key_id", "secret_access_key"}),
        ),
    }
)

_SIZE = re.compile(r"(\d+)\s*([kmg]i?b|b)?", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def _parse_size(value: object) -> object:
    """Byte counts: a whole number, or one with a unit (KB/MB/GB = 1000ⁿ, KiB/MiB/GiB = 1024ⁿ)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a size in bytes (got {show_value(value)})")
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"must be a size in bytes such as 26214400, 25MiB or 512KB (got {value!r})"
        )
    number, unit = match.groups()
    return int(number) * _SIZE_UNITS[(unit or "b").lower()]


def _http_url(value: str) -> str:
    """Adapters append their paths, so the trailing slash is dropped."""
    scheme, _, rest = value.partition("://")
    if scheme not in ("http", "https") or not rest.strip("/"):
        raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
    return value.rstrip("/")


ByteSize = Annotated[int, BeforeValidator(_parse_size), Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Section):
    """Sizes refused at ingress, before any vendor is bothered, and the HTTP server's bounds.

    The timeouts and the connection cap keep a client that sends slowly, or
    not at all, from holding the server's connections and memory for ever.
    """

    max_message_bytes: ByteSize = 25 * 2**20
    max_attachment_bytes: ByteSize = 25 * 2**20
    max_recipients: Count = 1000
    max_request_bytes: ByteSize = 36_000_000  # base64 makes a message ~4/3 larger in JSON
    # From connection open, or from the first byte of a later request on the connection.
    header_timeout: Seconds = 15.0
    # Between requests on a keep-alive connection: longer than the idle timeout of a
    # proxy or client pool in front (nginx: 60 s), so that they close first.
    idle_timeout: Seconds = 75.0
    # From the end of the headers; 60 s lets the largest body arrive at 600 kB/s.
    body_timeout: Seconds = 60.0
    max_connections: Count = 4096  # beyond it, new connections are refused at once

    @model_validator(mode="after")
    def _request_holds_a_message(self) -> Limits:
        if self.max_request_bytes < self.max_message_bytes:
            raise Violations(
                (
                    "max_request_bytes",
                    f"must be ≥ max_message_bytes ({self.max_message_bytes}), or the "
                    f"largest allowed message cannot arrive (got {self.max_request_bytes})",
                )
            )
        return self


def _with_default_policy(
    policies: Mapping[str, AmbiguousPolicyName],
) -> Mapping[str, AmbiguousPolicyName]:
    """Every traffic class needs an answer, so "default" is always present."""
    return {"default": "resend", **policies}


class DeliverySettings(_Section):
    attempt_timeout: Seconds = 10.0  # one attempt against one vendor
    # traffic class (or "default") → what an ambiguous outcome means for it
    ambiguous: Annotated[
        Mapping[ClassName, Annotated[AmbiguousPolicyName, one_of(get_args(AmbiguousPolicyName))]],
        AfterValidator(_with_default_policy),
    ] = Field(default_factory=lambda: _with_default_policy({}))


class HealthConfig(_Section):
    """Outlier detection per vendor, in Envoy's terms."""

    consecutive_failures: Count = 5
    window_seconds: Seconds = 30.0
    min_requests: Count = 20
    failure_rate: Annotated[float, Finite, Field(gt=0, le=1)] = 0.5
    latency_p90_seconds: Annotated[Seconds | None, BeforeValidator(null_words)] = 2.0
    base_ejection_seconds: Seconds = 30.0
    max_ejection_seconds: Seconds = 300.0

    @model_validator(mode="after")
    def _ejection_bounds(self) -> HealthConfig:
        if self.max_ejection_seconds < self.base_ejection_seconds:
            raise Violations(
                (
                    "max_ejection_seconds",
                    f"must be ≥ base_ejection_seconds ({show_value(self.base_ejection_seconds)}) "
                    f"(got {show_value(self.max_ejection_seconds)})",
                )
            )
        return self


class RetrySettings(_Section):
    base_delay: Seconds = 1.0  # back-off: full jitter over min(max_delay, base_delay * 2**n)
    max_delay: Seconds = 300.0
    max_age: Seconds = 72 * 3600.0  # a queued message without a deadline expires after this
    poll_interval: Seconds = 1.0
    lease_seconds: Seconds = 60.0
    batch_size: Count = 100
    concurrency: Count = 100
    # Of the free slots, the last ones only take mail above the lowest class priority.
    # Unset: a tenth of concurrency, at most 10 (0 below a concurrency of 10).
    reserved: CountOrZero | None = None

    @property
    def reserved_slots(self) -> int:
        """`reserved`, or its default for this concurrency."""
        if self.reserved is not None:
            return self.reserved
        return min(10, self.concurrency // 10)

    @model_validator(mode="after")
    def _room_for_the_lowest_priority(self) -> RetrySettings:
        if self.reserved is not None and self.reserved >= self.concurrency:
            raise Violations(
                (
                    "reserved",
                    f"must be < concurrency ({self.concurrency}), or no slot is left for "
                    f"the lowest class priority (got {self.reserved})",
                )
            )
        return self


class IdempotencySettings(_Section):
    retention_seconds: Seconds = 86400.0


class MetricsConfig(_Section):
    """Prometheus metrics at `GET /metrics` on the main listener."""

    enabled: bool = True  # false: no /metrics route and nothing counted on the hot path


class ReloadConfig(_Section):
    """Hot reload. SIGHUP and `POST /admin/v1/reload` reload the file whatever this says."""

    watch: bool = True  # reload when the config file changes on disk


class VendorConfig(_Section):
    """One ESP account. Rules that depend on `kind` come from VENDOR_KINDS."""

    kind: Annotated[str, one_of(VENDOR_KINDS)]
    weight: Annotated[float, Finite, Field(ge=0)]
    fallback: bool = True  # false: a weight-0 vendor is never used, not even when others fail
    pool_size: Count = 100
    connect_timeout: Seconds = 5.0
    attempt_timeout: Seconds | None = None  # this vendor's own; default delivery.attempt_timeout
    # Kind-specific settings (see VENDOR_KINDS for which kind takes which).
    api_key: Text | None = Field(default=None, repr=False)
    base_url: Annotated[str, AfterValidator(_http_url)] | None = None
    api_secret: Text | None = Field(default=None, repr=False)  # Mailjet's secret key
    domain: Text | None = None  # Mailgun's sending domain
    region: Text | None = None  # Amazon SES region, e.g. eu-west-1
    access_key_id: Text | None = Field(default=None, repr=False)  # SES; else AWS's chain
    secret_access_key: Text | None = Field(default=None, repr=False)
    host: Text | None = None  # SMTP relay host
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # default by tls: 587, 465, 25
    username: Text | None = None  # SMTP AUTH, with password
    password: Text | None = Field(default=None, repr=False)
    tls: Literal["none", "starttls", "implicit"] | None = None  # default starttls
    rate_limit: RateLimit | None = None  # what the ESP allows: per second, burst, per day
    warmup: WarmupConfig | None = None  # daily caps from a start date, a minimum share

    @model_validator(mode="before")
    @classmethod
    def _kind_default_base_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            rule = VENDOR_KINDS.get(data["kind"])
            if rule is not None and rule.default_base_url and data.get("base_url") is None:
                return {**data, "base_url": rule.default_base_url}
        return data

    @model_validator(mode="after")
    def _kind_rules(self) -> VendorConfig:
        rule = VENDOR_KINDS[self.kind]
        broken: list[tuple[str, str]] = []
        for name in KIND_SETTINGS:
            given = getattr(self, name) is not None
            if name in rule.required and not given:
                broken.append((name, f"required for kind {self.kind}"))
            elif given and name not in rule.required and name not in rule.optional:
                broken.append((name, f"not allowed for kind {self.kind}"))
        if broken:
            raise Violations(*broken)
        return self

    @model_validator(mode="after")
    def _min_share_usable(self) -> VendorConfig:
        if self.warmup and self.warmup.min_share and self.weight == 0 and not self.fallback:
            raise Violations(
                ("warmup.min_share", "a vendor with weight 0 and fallback: false is never used")
            )
        return self


def _check_vendors(vendors: Mapping[str, VendorConfig]) -> Mapping[str, VendorConfig]:
    if not vendors:
        raise ValueError("at least one vendor is required")
    if not any(vendor.weight > 0 for vendor in vendors.values()):
        raise ValueError(
            "at least one vendor needs weight > 0, otherwise no vendor would ever be tried first"
        )
    shares = {n: v.warmup.min_share for n, v in vendors.items() if v.warmup and v.warmup.min_share}
    if sum(shares.values()) >= 1:
        listed = ", ".join(f"{n} {s:g}" for n, s in shares.items())
        raise ValueError(
            "the warm-up min_shares must sum below 1, leaving a share to the weights "
            f"(got {listed})"
        )
    return vendors


class ClientConfig(_Section):
    """A named client: its key goes in the auth slot of whichever API it calls."""

    key: Text = Field(repr=False)


class ShapeIngress(_Section):
    """One ESP's send API as mailmux serves it (see `mailmux.vendors.shapes`)."""

    enabled: bool = True
    #: Also serve this shape's routes on an address of its own (host:port).
    listen: str | None = None

    @field_validator("listen", mode="before")
    @classmethod
    def _valid_listen(cls, value: object) -> object:
        return checked_listen(value)


class IngressConfig(_Section):
    """Which ESP-shaped APIs are served: all, at their ESP's own paths, unless turned off."""

    sendgrid: ShapeIngress = Field(default_factory=ShapeIngress)
    mailgun: ShapeIngress = Field(default_factory=ShapeIngress)
    postmark: ShapeIngress = Field(default_factory=ShapeIngress)
    sparkpost: ShapeIngress = Field(default_factory=ShapeIngress)
    ses: ShapeIngress = Field(default_factory=ShapeIngress)
    resend: ShapeIngress = Field(default_factory=ShapeIngress)
    mailjet: ShapeIngress = Field(default_factory=ShapeIngress)
    brevo: ShapeIngress = Field(default_factory=ShapeIngress)

    def enabled(self) -> dict[str, ShapeIngress]:
        """The shapes that are on, by name."""
        return {
            name: shape
            for name in type(self).model_fields
            if (shape := getattr(self, name)).enabled
        }


_SQLITE = "sqlite:///"
_POSTGRES = ("postgresql://", "postgres://")


class Config(_Section):
    """The whole validated configuration of one mailmux node."""

    listen: str = "127.0.0.1:8025"  # native API, admin API, metrics, dashboard
    store: str = Field(default="sqlite:///mailmux.db", repr=False)  # may hold a password
    node_id: Text = Field(default_factory=socket.gethostname)  # names this node's leases
    api_keys: tuple[Text, ...] = Field(default=(), repr=False)
    admin_keys: tuple[Text, ...] = Field(default=(), repr=False)  # the admin API's keys
    clients: Mapping[ClientName, ClientConfig] = Field(default_factory=dict)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    limits: Limits = Field(default_factory=Limits)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    health: HealthConfig = Field(default_factory=HealthConfig)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    reload: ReloadConfig = Field(default_factory=ReloadConfig)
    notify: tuple[NotifyTarget, ...] = ()  # webhooks for ejections, recoveries, overrides
    vendors: Annotated[Mapping[VendorName, VendorConfig], AfterValidator(_check_vendors)]
    # Traffic classes (built-ins otp, transactional, bulk, and the config's own) and the
    # ordered routing rules; see mailmux.classes and mailmux.rules.
    classes: Mapping[ClassName, ClassConfig] = Field(default_factory=dict)
    rules: tuple[RuleConfig, ...] = ()

    @field_validator("listen", mode="before")
    @classmethod
    def _valid_listen(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError(f"must be host:port, e.g. 127.0.0.1:8025 (got {show_value(value)})")
        split_listen(value)
        return value

    @field_validator("store", mode="after")
    @classmethod
    def _valid_store(cls, value: str) -> str:
        if value.startswith(_SQLITE):
            if value == _SQLITE:
                raise ValueError("needs a file path, e.g. sqlite:///mailmux.db")
        elif not value.startswith(_POSTGRES):
            scheme = value.partition("://")[0] if "://" in value else value[:12]
            raise ValueError(f"must be sqlite:///path or postgresql://... (got {scheme!r}...)")
        return value

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        """An override arrives as one string: MAILMUX_API_KEYS=token1,token2."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",")]
        return value

    @model_validator(mode="after")
    def _keys_name_one_client(self) -> Config:
        seen: dict[str, str] = {}
        problems = []
        named = [(f"clients.{n}.key", c.key) for n, c in self.clients.items()]
        listed = [
            (f"{field}[{i}]", k)
            for field in ("api_keys", "admin_keys")
            for i, k in enumerate(getattr(self, field))
        ]
        for path, key in [*named, *listed]:
            first = seen.setdefault(key, path)
            if first != path:
                problems.append((path, f"the same key as {first}: a key must name one client"))
        if problems:
            raise Violations(*problems)
        return self

    @model_validator(mode="after")
    def _classes_and_rules_fit(self) -> Config:
        problems = class_and_rule_problems(self)
        if problems:
            raise Violations(*problems)
        return self

    @property
    def client_keys(self) -> bool:
        """Whether callers must show a key (api_keys or clients are configured)."""
        return bool(self.api_keys or self.clients)

    @model_validator(mode="after")
    def _lease_outlives_attempt(self) -> Config:
        longest = max(
            [self.delivery.attempt_timeout]
            + [v.attempt_timeout for v in self.vendors.values() if v.attempt_timeout is not None]
        )
        lease = self.retry.lease_seconds
        if lease <= longest:
            raise Violations(
                (
                    "retry.lease_seconds",
                    f"must be > the longest attempt timeout ({show_value(longest)}), or a "
                    f"lease can run out during an attempt (got {show_value(lease)})",
                )
            )
        return self

    @property
    def listen_host(self) -> str:
        """The address to bind, IPv6 without brackets."""
        return split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can reach the listener."""
        return is_loopback(self.listen_host)

    def exposed(self) -> list[str]:
        """The configured listen addresses other machines could reach (`path: address`)."""
        found = [] if self.is_loopback else [f"listen: {self.listen}"]
        for name, shape in self.ingress.enabled().items():
            if shape.listen is not None and not is_loopback(split_listen(shape.listen)[0]):
                found.append(f"ingress.{name}.listen: {shape.listen}")
        for name, address in self.smtp.addresses():
            if not is_loopback(split_listen(address)[0]):
                found.append(f"smtp.{name}: {address}")
        return found

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file (relative paths are relative to the working directory)."""
        if not self.store.startswith(_SQLITE):
            return None
        return Path(self.store.removeprefix(_SQLITE))


# ---------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Config:
    """Read, override, substitute and validate; raise ConfigError listing every problem.

    With `path` None, ./mailmux.yaml is used if it exists, else the embedded
    default (MAILMUX_ overrides still apply). An explicit path must exist.
    """
    if path is None:
        if not Path(CONFIG_FILE).exists():
            return _build(DEFAULT_YAML, _DEFAULT_SOURCE, env)
        path = CONFIG_FILE
    errors: list[str] = []
    text = read_file(Path(path), errors)
    if text is None:
        raise ConfigError(errors)
    return _build(text, os.fspath(path), env)


def default_config() -> Config:
    """The embedded default, untouched by the environment."""
    return _build(DEFAULT_YAML, _DEFAULT_SOURCE, {})


def _build(text: str, source: str, env: Mapping[str, str]) -> Config:
    errors: list[str] = []
    raw = parse_yaml(text, source, errors)
    if raw is None:
        raise ConfigError(errors)
    origins = apply_overrides(raw, env, errors)
    unresolved: set[Location] = set()
    expanded = substitute(raw, (), env, errors, unresolved)
    try:
        config = Config.model_validate(expanded)
    except ValidationError as err:
        errors += error_lines(err, origins, unresolved, Config)
        raise ConfigError(errors) from None
    if errors:
        raise ConfigError(errors)
    return config
