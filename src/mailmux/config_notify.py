"""The `notify:` section: where mailmux posts its notices (`mailmux.notify`).

Its own module because a target's URL is a secret of a kind the rest of the
configuration does not have: a Slack incoming-webhook URL *is* its
credential (anyone holding it may post to the channel), so it is kept out of
reprs, out of error lines (`config_sources` treats `url` as a secret) and out
of log lines, which show `shown` (scheme://host[:port]) instead.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from mailmux.config_sources import show_value
from mailmux.notices import NoticeKind

NotifyFormat = Literal["json", "slack"]

#: What a target hears about unless it lists `events`: the moments traffic moves.
DEFAULT_EVENTS = (NoticeKind.EJECTED, NoticeKind.RECOVERED, NoticeKind.OVERRIDE)

_KINDS = ", ".join(kind.value for kind in NoticeKind)


def _webhook_url(value: str) -> str:
    """An http(s) URL with a host; a refusal names the scheme only, never the URL."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("must be an http:// or https:// URL with a valid host and port") from None
    if parts.scheme not in ("http", "https"):
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"must be an http:// or https:// URL (got {got})")
    if not parts.hostname:
        raise ValueError("must name a host, e.g. https://hooks.slack.com/services/...")
    return value


def _notice_kind(value: object) -> object:
    if not isinstance(value, str) or value not in NoticeKind._value2member_map_:
        raise ValueError(f"must be one of {_KINDS} (got {show_value(value)})")
    return value


def _distinct(kinds: tuple[NoticeKind, ...]) -> tuple[NoticeKind, ...]:
    """Each kind once, in the order given; none at all would be a target that hears nothing."""
    if not kinds:
        raise ValueError(f"must list at least one of {_KINDS}")
    return tuple(dict.fromkeys(kinds))


def _format(value: object) -> object:
    if value not in get_args(NotifyFormat):
        raise ValueError(f"must be json or slack (got {show_value(value)})")
    return value


class NotifyTarget(BaseModel):
    """One webhook: notices of the kinds in `events`, posted as `format` to `url`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: Annotated[str, AfterValidator(_webhook_url)] = Field(repr=False)
    # json: the notice as data (json_payload); slack: {"text": one line} (slack_payload)
    format: Annotated[NotifyFormat, BeforeValidator(_format)] = "json"
    events: Annotated[
        tuple[Annotated[NoticeKind, BeforeValidator(_notice_kind)], ...],
        AfterValidator(_distinct),
    ] = DEFAULT_EVENTS
    timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 5.0  # seconds for one POST

    @property
    def shown(self) -> str:
        """The URL as a log line may show it: scheme and host, without the secret path."""
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        port = f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://{host}{port}"
