"""SigV4 as SES checks it on the way in: the Authorization header read, the signature verified.

A boto3 client pointed at mailmux signs with its access key id and secret
access key; mailmux takes the secret as the client's key (`clients.<name>.key`)
and the access key id as the client's name. mailmux never sees the secret, so
`SigV4Credential.matches(key)` recomputes the signature with `key` as the
secret, using botocore's own signer over the headers the client signed, at
the time the client signed (`X-Amz-Date`), and compares in constant time.
Writing the canonical request ourselves would be a second SigV4
implementation to keep in step with botocore's; the signer is the contract.

Like AWS, a request signed more than 15 minutes away from mailmux's clock is
refused, so a captured request cannot be replayed later. The body must be the
one signed: botocore hashes it into the signature (or sends its hash as
`X-Amz-Content-SHA256`, which must then match); an unsigned payload is refused.

The signature covers the Host header and the path as the client saw them: a
proxy in front of mailmux must pass both unchanged (SendEmail's path has
nothing to percent-encode, so the decoded path is the signed one).

`authorization_problem` is the structural check alone (scheme, scope, date),
worded as SES words it: the emulator uses it, since it accepts any key pair.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from mailmux.vendors.inbound import Credential, ShapeRequest

SCHEME = "AWS4-HMAC-SHA256"
SERVICE = "ses"  # SES v2 signs as `ses`, as the outbound vendor does
MAX_SKEW = 15 * 60.0  # AWS refuses a signature more than 15 minutes off
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True, slots=True)
class Authorization:
    """A parsed `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` header."""

    access_key_id: str
    date: str  # the scope's YYYYMMDD
    region: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(
    headers: Mapping[str, str],
) -> Authorization | tuple[str, str] | None:
    """The request's SigV4 Authorization; (SES error type, message) when it is malformed;
    None when there is no Authorization header at all."""
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, text = part.strip().partition("=")
        fields[name] = text
    credential, signed, signature = (
        fields.get(k) for k in ("Credential", "SignedHeaders", "Signature")
    )
    if scheme != SCHEME or not (credential and signed and signature):
        return (
            "IncompleteSignatureException",
            f"Authorization must be '{SCHEME} Credential=…, SignedHeaders=…, Signature=…'.",
        )
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not scope[0]:
        return (
            "IncompleteSignatureException",
            "Credential must be <key id>/<date>/<region>/ses/aws4_request.",
        )
    if scope[3] != SERVICE:
        return (
            "InvalidSignatureException",
            f"Credential should be scoped to the correct service: 'ses', not {scope[3]!r}.",
        )
    if "X-Amz-Date" not in headers and "Date" not in headers:
        return "IncompleteSignatureException", "A signed request needs an X-Amz-Date header."
    return Authorization(scope[0], scope[1], scope[2], tuple(signed.split(";")), signature)


def authorization_problem(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(SES error type, message) for a request not SigV4-signed for `ses`; None if it is."""
    found = parse_authorization(headers)
    if found is None:
        return "MissingAuthenticationTokenException", "Missing Authentication Token"
    return found if isinstance(found, tuple) else None


class SigV4Credential(Credential):
    """A SigV4-signed request as a credential: `name` is the access key id, and `matches`
    verifies the signature with the given key as the secret access key."""

    __slots__ = ("_auth", "_request", "_string_to_sign")

    def __init__(self, auth: Authorization | None, request: AWSRequest | None) -> None:
        super().__init__("", None if auth is None else auth.access_key_id)
        self._auth = auth
        self._request = request  # None: nothing this request carries can match
        self._string_to_sign: str | None = None

    def matches(self, key: str) -> bool:
        auth, request = self._auth, self._request
        if auth is None or request is None:
            return False
        signer = SigV4Auth(Credentials(auth.access_key_id, key), SERVICE, auth.region)
        if self._string_to_sign is None:  # the same for every key: computed once
            self._string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
        expected: str = signer.signature(self._string_to_sign, request)
        return hmac.compare_digest(expected.encode(), auth.signature.encode())


def credential(request: ShapeRequest, now: float) -> SigV4Credential | None:
    """The request's SigV4 credential; None without an Authorization header.

    A malformed, stale or otherwise unverifiable signature still gives a credential
    (one that matches no key): the caller showed a key, just not one mailmux takes.
    """
    found = parse_authorization(request.headers)
    if found is None:
        return None
    if isinstance(found, tuple):
        return SigV4Credential(None, None)
    return SigV4Credential(found, _signed_request(request, found, now))


def _signed_request(request: ShapeRequest, auth: Authorization, now: float) -> AWSRequest | None:
    """The request as botocore's signer sees it, or None when it cannot verify."""
    headers = request.headers
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, _DATE_FORMAT))
    except ValueError:
        return None
    if amz_date[:8] != auth.date or abs(now - signed_at) > MAX_SKEW:
        return None
    payload = headers.get("X-Amz-Content-SHA256")
    if payload is not None and payload != hashlib.sha256(request.body).hexdigest():
        return None  # also refuses UNSIGNED-PAYLOAD: the body must be the one signed
    names = auth.signed_headers
    if "host" not in names or any(name not in headers for name in names):
        return None
    query = f"?{request.query}" if request.query else ""
    # http: botocore then always hashes the body into the signature, as boto3 did.
    url = f"http://{headers['host']}{request.path}{query}"
    signed = AWSRequest(method=request.method, url=url, data=request.body)
    getall = getattr(headers, "getall", None)
    for name in names:
        for value in getall(name) if getall is not None else (headers[name],):
            signed.headers[name] = value  # HTTPHeaders appends: repeated headers kept
    signed.context["timestamp"] = amz_date  # sign as of the client's time, not now
    return signed
