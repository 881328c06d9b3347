"""Amazon SES v2 SendEmail (`POST {base_url}/v2/email/outbound-emails`): Message → signed
request, answer → outcome.

Requests are signed per attempt with botocore's SigV4 signer (signing name `ses`, not
`sesv2`). Two of its inputs come from mailmux: the signing time, from the vendor's
`clock` so a test can pin it, and the body's SHA-256, hashed over a large body's parts
as they will be sent so the body is never joined for it (attachments and Raw data are
base64 encoded while the request is written; see `vendors.body`).
Credentials are the configured keys, else botocore's default chain (environment, shared
config, container or instance role), resolved once; refreshable ones are refreshed off
the event loop when they near expiry, and a failed refresh is vendor_config (nothing
can be signed).

A SendEmail request that came in through mailmux's SES shape (`message.original`) is
passed through: its body goes out byte for byte, signed anew with this vendor's keys and
region, so what mailmux does not model (templates, list management, configuration sets)
still reaches SES, and the caller gets SES's own answer.

Content is `Simple` when SES can build the message from parts — subject, text/HTML
bodies, up to 15 printable-ASCII custom headers, attachments with inline content ids —
and `Raw` otherwise: the message's own `raw_mime`, or `mailmux.mime.render_mime` when
the message has an empty subject, no body, more than 15 headers, a header SES's Simple
form cannot hold (non-ASCII, over 995 characters), an attachment name, type or content
id longer than SES takes, or an attached `message/rfc822` (which must not be base64).
Raw carries all of these faithfully, so none of them is unsupported. Display names go
out as `Name <addr>`, RFC 2047-encoded when not ASCII, as SES requires.

A message without To (cc and/or bcc only) goes as it is: `Destination` takes any of
its three lists alone, SES writes no Bcc header from `BccAddresses`, and in Raw the
MIME never has one (a bcc-only message says `To: undisclosed-recipients:;`).

Tags and metadata become `EmailTags`, which SES returns in every event it publishes:
each metadata entry as `{Name: key, Value: value}` and each tag as
`{Name: tag, Value: "true"}` (SES tags are pairs; a tag's presence is its meaning).
SES allows only ASCII letters, digits, `_` and `-`, 1 to 256 of them, in both; anything
else is unsupported rather than rewritten, since a rewritten tag would no longer match
what the caller looks for in SES's events.

How SES's answers are classified (the error type is `x-amzn-ErrorType`, else the body's
`__type`, without its `namespace#` prefix and `:url` suffix):

====================================  ==============  ===================================
error type (status)                   outcome         why
====================================  ==============  ===================================
2xx                                   accepted        the id is the body's `MessageId`.
MessageRejected (400)                 permanent       SES refused this message (bad
                                                      address, content); but "not
                                                      verified", "not authorized" or
                                                      "suspended"/"paused" texts are
                                                      vendor_config: the sender (or, in
                                                      the sandbox, the recipient) is not
                                                      verified for this account, which
                                                      another vendor does not need.
BadRequestException, Validation-      permanent       the request is invalid as built
Exception, InvalidParameterValue                      from this message.
MailFromDomainNotVerifiedException,   vendor_config   the account cannot send this now,
AccountSuspendedException,                            whatever the message.
SendingPausedException,
NotFoundException (404)
any 401/403 (AccessDenied*,           vendor_config   credentials, IAM policy, clock skew
SignatureDoesNotMatch,                                (RequestExpired) or region: every
UnrecognizedClient*,                                  message would fail the same way.
InvalidClientTokenId, …)
404 without a type, 3xx               vendor_config   `base_url` points at the wrong place.
TooManyRequestsException (429)        rate_limited    API call rate; retry after 1 s (SES
                                                      sends no rate-limit headers;
                                                      `Retry-After` wins when present).
ThrottlingException "Maximum sending  rate_limited    the per-second sending rate; 1 s.
rate exceeded" (that text under
any type)
ThrottlingException "Daily message    rate_limited,   the rolling 24-hour quota. AWS says
quota exceeded" (that text under      reason "quota"  to wait and retry; 600 s (its
any type)                                             "wait up to 10 minutes") keeps the
                                                      retrier from hammering a spent quota.
LimitExceededException                rate_limited    an account limit; no retry hint.
5xx                                   retriable       SES's trouble.
anything else                         retriable       unknown says nothing certain about
                                                      the message: never fail it for good.
====================================  ==============  ===================================

What SES cannot carry raises `UnsupportedFeature` before any request: more than 50
recipients, an address whose local part is not ASCII (SES has no SMTPUTF8; IDN domains
go out in punycode), an attachment with an extension SES refuses, a tag or metadata
entry outside SES's tag rules (or a tag named like a metadata key), and a request over
40 MB. SendEmail takes no idempotency key (botocore's model has no idempotency token for
it): neither the message id nor the caller's key is sent, and a retry after an ambiguous
attempt may be sent twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Callable, Mapping
from email.header import Header
from http import HTTPStatus
from typing import Any

import orjson
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import (  # type: ignore[import-untyped]
    Credentials,
    RefreshableCredentials,
)
from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
from botocore.session import Session  # type: ignore[import-untyped]

from mailmux.addresses import ascii_email
from mailmux.message import Address, Attachment, Message, Original
from mailmux.mime import render_mime
from mailmux.vendors.base import (
    AttemptResult,
    HttpRequest,
    HttpResponse,
    HttpVendor,
    Outcome,
    Transport,
    UnsupportedFeature,
    excerpt,
    parse_retry_after,
)
from mailmux.vendors.body import AttachmentEntry, Body, base64_text, json_body, sha256_hex

SIGNING_NAME = "ses"  # SES v2 signs as `ses`; botocore's model calls the service `sesv2`
PATH = "/v2/email/outbound-emails"
MAX_RECIPIENTS = 50
MAX_REQUEST_BYTES = 40 * 1024 * 1024  # SES v2: 40 MB per message after base64
#: Limits of the Simple form (botocore's sesv2 model); beyond them the message goes Raw.
MAX_SIMPLE_HEADERS = 15
MAX_HEADER_VALUE = 995
MAX_HEADER_LINE = 996  # name + value
MAX_FILENAME = 255
MAX_CONTENT_TYPE = 78
MAX_CONTENT_ID = 78
_HEADER_NAME = re.compile(r"[!-9;-~]{1,126}")  # printable ASCII but ':'
_HEADER_VALUE = re.compile(r"[ -~]+")
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: Attachment extensions SES refuses ("Amazon SES unsupported attachment types", 2025).
BLOCKED_EXTENSIONS = frozenset(
    (  # noqa: SIM905 - a word list reads better than 90 quoted strings
        "ade adp app asp bas bat cer chm cmd com cpl crt csh der exe fxp gadget hlp hta inf"
        " ins isp its js jse ksh lib lnk mad maf mag mam maq mar mas mat mau mav maw mda mdb"
        " mde mdt mdw mdz msc msh msh1 msh2 mshxml msh1xml msh2xml msi msp mst ops pcd pif"
        " plg prf prg reg scf scr sct shb shs sys ps1 ps1xml ps2 ps2xml psc1 psc2 tmp url vb"
        " vbe vbs vps vsmacros vss vst vsw vxd ws wsc wsf wsh xnk"
    ).split()
)
RATE_RETRY_AFTER = 1.0  # SES rates are per second
QUOTA_RETRY_AFTER = 600.0  # AWS: wait (up to 10 minutes) and retry
_UTF8 = "UTF-8"
_REASON_CHARS = 300


class SesVendor(HttpVendor):
    """An SES account in one region; `base_url` may point at moto or the emulator."""

    kind = "ses"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        region: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        base_url: str | None = None,
    ) -> None:
        super().__init__(name, transport)
        if not region:
            raise ValueError(f"vendor {name!r}: SES needs a region")
        self._region = region
        self._credentials = _credentials(name, access_key_id, secret_access_key)
        base = base_url or f"https://email.{region}.amazonaws.com"
        self._url = base.rstrip("/") + PATH
        #: Wall clock: the SigV4 signing time and the Date of rendered MIME; tests pin it.
        self.clock: Callable[[], float] = time.time

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        try:
            if isinstance(self._credentials, RefreshableCredentials) and (
                self._credentials.refresh_needed()
            ):
                # Refreshing calls STS or the instance metadata service: not on the loop.
                await asyncio.to_thread(self._credentials.get_frozen_credentials)
            return await super().send(message, timeout, message_id)
        except BotoCoreError as err:
            return AttemptResult(
                Outcome.VENDOR_CONFIG, reason=f"AWS credentials could not be refreshed: {err}"
            )

    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        now = self.clock()
        body = json_body(_payload(message, now))
        if len(body) > MAX_REQUEST_BYTES:
            raise UnsupportedFeature(
                f"request of {len(body) / 2**20:.1f} MB; SES takes at most 40 MB per message"
            )
        return self._signed(body, "application/json", now)

    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        """The caller's SendEmail body as it came, signed anew with this vendor's keys."""
        return self._signed(original.body, original.content_type, self.clock())

    def _signed(self, body: Body, content_type: str, now: float) -> HttpRequest:
        """A SendEmail request for `body`, SigV4-signed at `now` for this vendor's account."""
        request = AWSRequest(method="POST", url=self._url, headers={"Content-Type": content_type})
        credentials = self._credentials.get_frozen_credentials()
        timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        _SigV4At(credentials, self._region, timestamp, sha256_hex(body)).add_auth(request)
        return HttpRequest("POST", self._url, dict(request.headers.items()), body)

    def parse_response(self, response: HttpResponse) -> AttemptResult:
        status = response.status
        data = _json(response.body)
        if 200 <= status < 300:
            message_id = data.get("MessageId")
            return AttemptResult(
                Outcome.ACCEPTED,
                vendor_message_id=message_id if isinstance(message_id, str) else None,
                status=status,
            )
        kind = _error_type(response.headers.get("x-amzn-errortype") or data.get("__type"))
        text = _error_text(data, response)
        detail = f"{kind}: {text}" if kind else text
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
        outcome, reason, default_wait = _classify(status, kind, text.casefold())
        if outcome is Outcome.RATE_LIMITED and retry_after is None:
            retry_after = default_wait
        reason = f"{reason}: {detail}" if reason else detail
        return AttemptResult(outcome, status=status, reason=_short(reason), retry_after=retry_after)


class _SigV4At(SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
    """botocore's SigV4 signer at a given signing time, over a body hashed beforehand.

    `add_auth` stamps the system time into the request context and then calls
    `_modify_request_before_signing` before deriving anything from it; replacing the
    stamp there leaves every other step botocore's own (the golden test checks the
    X-Amz-Date it produces). `payload` is the body's SHA-256, which botocore would compute
    from a bytes body: given here, a streamed body is hashed chunk by chunk, never joined
    (an X-Amz-Content-SHA256 header would do the same but add a header to every request).
    """

    def __init__(self, credentials: Any, region: str, timestamp: str, body_sha256: str) -> None:
        super().__init__(credentials, SIGNING_NAME, region)
        self._timestamp = timestamp
        self._body_sha256 = body_sha256

    def _modify_request_before_signing(self, request: Any) -> None:
        request.context["timestamp"] = self._timestamp
        super()._modify_request_before_signing(request)

    def payload(self, request: Any) -> str:
        return self._body_sha256


def _credentials(name: str, access_key_id: str | None, secret_access_key: str | None) -> Any:
    """The configured keys, else botocore's default chain, looked up once."""
    if access_key_id or secret_access_key:
        if not (access_key_id and secret_access_key):
            raise ValueError(
                f"vendor {name!r}: SES needs both access_key_id and secret_access_key,"
                " or neither to use the AWS default credential chain"
            )
        return Credentials(access_key_id, secret_access_key)
    try:
        found = Session().get_credentials()
    except BotoCoreError as err:
        raise ValueError(f"vendor {name!r}: AWS credentials could not be loaded: {err}") from err
    if found is None:
        raise ValueError(
            f"vendor {name!r}: no AWS credentials; set access_key_id and secret_access_key,"
            " or provide them the AWS way (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,"
            " a shared config profile, or a container or instance role)"
        )
    return found


# -- Message → request ----------------------------------------------------------------


def _payload(message: Message, now: float) -> dict[str, Any]:
    """The SendEmail body; empty fields are left out."""
    everyone = (*message.to, *message.cc, *message.bcc)
    if len(everyone) > MAX_RECIPIENTS:
        raise UnsupportedFeature(
            f"{len(everyone)} recipients; SES takes at most {MAX_RECIPIENTS} per message"
        )
    for address in (message.sender, *everyone, *message.reply_to):
        _ascii(address)
    for attachment in message.attachments:
        _check_extension(attachment)
    tags = _email_tags(message.tags, message.metadata)
    simple = message.raw_mime is None and _fits_simple(message)
    payload: dict[str, Any] = {
        "FromEmailAddress": _mailbox(message.sender) if simple else _ascii(message.sender)
    }
    destination = {
        key: [_mailbox(a) if simple else _ascii(a) for a in addresses]
        for key, addresses in (
            ("ToAddresses", message.to),
            ("CcAddresses", message.cc),
            ("BccAddresses", message.bcc),
        )
        if addresses
    }
    if destination:
        payload["Destination"] = destination
    if simple and message.reply_to:
        payload["ReplyToAddresses"] = [_mailbox(a) for a in message.reply_to]
    if simple:
        payload["Content"] = {"Simple": _simple(message)}
    else:  # Raw: the MIME holds From, To, Cc and Reply-To; Destination is the envelope.
        raw = render_mime(message, now=now)
        payload["Content"] = {"Raw": {"Data": base64_text(raw)}}
    if tags:
        payload["EmailTags"] = tags
    return payload


def _fits_simple(message: Message) -> bool:
    """Whether SES's Simple form can hold every part of `message` as it is."""
    if not message.subject or not (message.text or message.html):
        return False
    if len(message.headers) > MAX_SIMPLE_HEADERS:
        return False
    for name, value in message.headers.items():
        if not (_HEADER_NAME.fullmatch(name) and _HEADER_VALUE.fullmatch(value)):
            return False
        if len(value) > MAX_HEADER_VALUE or len(name) + len(value) > MAX_HEADER_LINE:
            return False
    return all(
        len(a.filename) <= MAX_FILENAME
        and 0 < len(a.content_type) <= MAX_CONTENT_TYPE
        and len(a.content_id or "") <= MAX_CONTENT_ID
        and a.content_type.lower() != "message/rfc822"
        for a in message.attachments
    )


def _simple(message: Message) -> dict[str, Any]:
    body = {
        key: {"Data": value, "Charset": _UTF8}
        for key, value in (("Text", message.text), ("Html", message.html))
        if value
    }
    simple: dict[str, Any] = {"Subject": {"Data": message.subject, "Charset": _UTF8}, "Body": body}
    if message.headers:
        simple["Headers"] = [{"Name": n, "Value": v} for n, v in message.headers.items()]
    if message.attachments:
        simple["Attachments"] = [_attachment(a) for a in message.attachments]
    return simple


def _attachment(attachment: Attachment) -> AttachmentEntry:
    entry: AttachmentEntry = {
        "RawContent": base64_text(attachment.content),
        "FileName": attachment.filename,
        "ContentType": attachment.content_type,
        "ContentDisposition": "INLINE" if attachment.inline else "ATTACHMENT",
    }
    if attachment.content_id:
        entry["ContentId"] = attachment.content_id
    return entry


def _check_extension(attachment: Attachment) -> None:
    extension = attachment.filename.rpartition(".")[2].casefold()
    if "." in attachment.filename and extension in BLOCKED_EXTENSIONS:
        raise UnsupportedFeature(
            f"attachment {attachment.filename!r}: SES refuses .{extension} attachments"
        )


def _ascii(address: Address) -> str:
    """The address as SES takes it: IDN domain in punycode; no SMTPUTF8 local parts."""
    plain = ascii_email(address.email)
    if plain is None:
        raise UnsupportedFeature(
            f"{address.email}: SES does not support SMTPUTF8 (non-ASCII local part)"
        )
    return plain


def _mailbox(address: Address) -> str:
    """`Name <addr>`; a non-ASCII name as RFC 2047 encoded words, which SES requires."""
    addr = _ascii(address)
    if not address.name:
        return addr
    if address.name.isascii():
        return email.utils.formataddr((address.name, addr))
    words = Header(address.name, "utf-8", maxlinelen=75).encode(linesep="")  # RFC 2047: ≤ 75
    return f"{words} <{addr}>"


def _email_tags(tags: tuple[str, ...], metadata: Mapping[str, str]) -> list[dict[str, str]]:
    """Metadata entries, then tags flagged "true", as SES message tags (module docstring)."""
    pairs = list(metadata.items())
    for tag in dict.fromkeys(tags):  # unique, order kept
        if tag in metadata:
            raise UnsupportedFeature(
                f"tag {tag!r} is also a metadata key; SES message tags are one namespace"
            )
        pairs.append((tag, "true"))
    for name, value in pairs:
        for what, text in (("name", name), ("value", value)):
            if not _TAG.fullmatch(text):
                raise UnsupportedFeature(
                    f"SES tag {what} {text[:40]!r} (from tag or metadata {name[:40]!r}) must be"
                    " 1 to 256 ASCII letters, digits, '_' or '-'"
                )
    return [{"Name": name, "Value": value} for name, value in pairs]


# -- answer → outcome -----------------------------------------------------------------

_THROTTLING = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})
_QUOTA_TEXT = "daily message quota exceeded"
_RATE_TEXT = "maximum sending rate exceeded"
_PERMANENT = frozenset({"BadRequestException", "ValidationException", "InvalidParameterValue"})
_CONFIG_REASONS = {
    "MailFromDomainNotVerifiedException": "the MAIL FROM domain is not verified",
    "AccountSuspendedException": "the SES account is suspended",
    "SendingPausedException": "sending is paused for the account or configuration set",
    "NotFoundException": "a resource the request names (configuration set) does not exist",
    "SignatureDoesNotMatch": "signature rejected; check secret_access_key",
    "InvalidSignatureException": "signature rejected; check secret_access_key",
    "InvalidClientTokenId": "access key not recognized; check access_key_id",
    "ExpiredTokenException": "the AWS session token has expired",
    "RequestExpired": "request time too far from AWS time; check the system clock",
}
_CONFIG_PREFIXES = {
    "AccessDenied": "access denied; the IAM policy must allow ses:SendEmail",
    "UnrecognizedClient": "access key not recognized; check access_key_id",
}
#: MessageRejected texts that are about the account, not the message (casefolded).
_REJECTED_IDENTITY = ("not verified", "not authorized", "did not have authority")
_REJECTED_ACCOUNT = ("suspended", "paused")


def _classify(status: int, kind: str, text: str) -> tuple[Outcome, str, float | None]:
    """(outcome, reason prefix, default retry_after) for an SES error; `text` casefolded."""
    # SES's quota texts are specific enough to trust whatever type carries them: a quota
    # must never end as "permanent".
    throttled = kind in _THROTTLING
    if _QUOTA_TEXT in text or (throttled and "quota" in text):
        return Outcome.RATE_LIMITED, "quota exhausted", QUOTA_RETRY_AFTER
    if throttled or _RATE_TEXT in text:
        return Outcome.RATE_LIMITED, "rate limited", RATE_RETRY_AFTER
    if kind == "MessageRejected":
        if any(words in text for words in _REJECTED_IDENTITY):
            why = (
                "identity not verified for this account and region (in the sandbox, recipients too)"
            )
            return Outcome.VENDOR_CONFIG, why, None
        if any(words in text for words in _REJECTED_ACCOUNT):
            return Outcome.VENDOR_CONFIG, "sending suspended or paused for this account", None
        return Outcome.PERMANENT, "", None
    if kind == "LimitExceededException":
        return Outcome.RATE_LIMITED, "rate limited (account limit)", None
    if kind in _PERMANENT:
        return Outcome.PERMANENT, "", None
    config = _CONFIG_REASONS.get(kind) or next(
        (why for prefix, why in _CONFIG_PREFIXES.items() if kind.startswith(prefix)), None
    )
    if config is not None:
        return Outcome.VENDOR_CONFIG, config, None
    if status in (401, 403):
        return Outcome.VENDOR_CONFIG, "credentials or permissions rejected", None
    if status == 404 or 300 <= status < 400:
        return Outcome.VENDOR_CONFIG, "not an SES endpoint; check base_url and region", None
    if status == 429:
        return Outcome.RATE_LIMITED, "rate limited", RATE_RETRY_AFTER
    if status >= 500:
        return Outcome.RETRIABLE, "", None
    return Outcome.RETRIABLE, "unexpected answer", None


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_type(value: object) -> str:
    """`MessageRejected` from `com.amazonaws.sesv2#MessageRejected:http://…` and kin."""
    if not isinstance(value, str):
        return ""
    return value.partition(":")[0].rpartition("#")[2].strip()


def _error_text(data: Mapping[str, Any], response: HttpResponse) -> str:
    """SES's message, else a body excerpt, else the status phrase."""
    for key in ("message", "Message"):
        if isinstance(data.get(key), str) and data[key]:
            return str(data[key])
    text = excerpt(response.body)
    if text:
        return text
    try:
        return HTTPStatus(response.status).phrase
    except ValueError:
        return f"HTTP {response.status}"


def _short(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
