"""boto3's `sesv2` client pointed at mailmux: translated, passed through, refused as SES refuses."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from email.header import Header
from pathlib import Path
from typing import Any

import aiohttp
import boto3  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]
import orjson
import pytest
import requests
from botocore import UNSIGNED
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router
from vendor_kit import PDF, PNG, no_aws_environment

PATH = "/v2/email/outbound-emails"
REGION = "eu-west-1"


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither boto3 nor the vendor may pick up endpoints or keys from this machine."""
    no_aws_environment(monkeypatch, tmp_path)


def ses_client(
    url: str, *, name: str = CLIENT_NAME, key: str = CLIENT_KEY, config: Config | None = None
) -> Any:
    """The official client, with only its endpoint changed (and mailmux's client key)."""
    return boto3.client(
        "sesv2",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=name,
        aws_secret_access_key=key,
        config=config,
    )


def send(url: str, **request: Any) -> Any:
    client = ses_client(url)
    try:
        return client.send_email(**request)
    finally:
        client.close()


def signed(
    url: str, body: bytes, *, key: str = CLIENT_KEY, at: float | None = None, **headers: str
) -> dict[str, str]:
    """Headers of a hand-made request, SigV4-signed by botocore as boto3 signs."""
    request = AWSRequest(
        method="POST",
        url=url + PATH,
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", **headers},
    )
    signer = SigV4Auth(Credentials(CLIENT_NAME, key), "ses", REGION)
    if at is None:
        signer.add_auth(request)
    else:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))
        original = signer._modify_request_before_signing

        def pinned(req: Any) -> None:
            req.context["timestamp"] = stamp  # X-Amz-Date is written from it
            original(req)

        signer._modify_request_before_signing = pinned
        signer.add_auth(request)
    return dict(request.headers.items())


async def post(
    url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + PATH, data=body, headers=headers) as answer,
    ):
        raw = await answer.read()
        return answer.status, dict(answer.headers), orjson.loads(raw) if raw else {}


async def eventually(check: Callable[[], Any], *, seconds: float = 10.0) -> Any:
    """Poll an async check until it returns something truthy (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def nothing_kept(mux: Router) -> None:
    for vendor in mux.emulators:
        assert await mux.received(vendor) == []
    assert sum((await mux.app.store.count_by_state()).values()) == 0


SIMPLE: dict[str, Any] = {
    "FromEmailAddress": "shop@example.com",
    "Destination": {"ToAddresses": ["ana@example.org"]},
    "Content": {"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hello."}}}},
}
TEMPLATE: dict[str, Any] = {
    "FromEmailAddress": "shop@example.com",
    "Destination": {"ToAddresses": ["ana@example.org"]},
    "Content": {
        "Template": {
            "TemplateContent": {"Subject": "Hi {{name}}", "Text": "Hello {{name}}."},
            "TemplateData": '{"name": "Ana"}',
        }
    },
    "ConfigurationSetName": "receipts",
}


# -- (a) translated to another ESP ------------------------------------------------------


async def test_a_rich_message_is_translated_for_sendgrid(tmp_path: Path) -> None:
    sender = f"{Header('Zoë Shop', 'utf-8').encode()} <shop@example.com>"  # as SES wants it
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        answer = await mux.call(
            send,
            mux.url,
            FromEmailAddress=sender,
            Destination={
                "ToAddresses": ["Ana María <ana@example.org>", "bo@example.net"],
                "CcAddresses": ["chen@example.com"],
                "BccAddresses": ["audit@example.com"],
            },
            ReplyToAddresses=["Help Desk <help@example.com>"],
            Content={
                "Simple": {
                    "Subject": {"Data": "Receipt №7", "Charset": "UTF-8"},
                    "Body": {
                        "Text": {"Data": "Thanks."},
                        "Html": {"Data": '<p>Thanks <img src="cid:logo@x"></p>'},
                    },
                    "Headers": [{"Name": "X-Order", "Value": "7"}],
                    "Attachments": [
                        {"RawContent": PDF, "FileName": "r.pdf", "ContentType": "application/pdf"},
                        {
                            "RawContent": PNG,
                            "FileName": "logo.png",
                            "ContentType": "image/png",
                            "ContentDisposition": "INLINE",
                            "ContentId": "logo@x",
                        },
                    ],
                }
            },
            EmailTags=[{"Name": "campaign", "Value": "spring"}],
            ConfigurationSetName="receipts",  # account-side: dropped when translated
        )
        (record,) = await mux.received("other")
        message_id = answer["MessageId"]
        found = await mux.message(message_id)

    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-mailmux-message-id"] == message_id
    assert found["state"] == "sent"
    attempt = next(e for e in found["events"] if e.get("vendor") == "other")
    assert attempt["mode"] == "translated"
    body = record["body"]
    assert body["from"] == {"email": "shop@example.com", "name": "Zoë Shop"}
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [
        {"email": "ana@example.org", "name": "Ana María"},
        {"email": "bo@example.net"},
    ]
    assert personalization["cc"] == [{"email": "chen@example.com"}]
    assert personalization["bcc"] == [{"email": "audit@example.com"}]
    assert personalization["custom_args"] == {"campaign": "spring"}
    assert body["reply_to"] == {"email": "help@example.com", "name": "Help Desk"}
    assert body["subject"] == "Receipt №7"
    assert body["content"] == [
        {"type": "text/plain", "value": "Thanks."},
        {"type": "text/html", "value": '<p>Thanks <img src="cid:logo@x"></p>'},
    ]
    assert body["headers"] == {"X-Order": "7"}
    pdf, png = body["attachments"]
    assert (base64.b64decode(pdf["content"]), pdf["filename"], pdf["type"]) == (
        PDF,
        "r.pdf",
        "application/pdf",
    )
    assert pdf["disposition"] == "attachment"
    assert base64.b64decode(png["content"]) == PNG
    assert (png["disposition"], png["content_id"]) == ("inline", "logo@x")


async def test_raw_content_is_translated_from_its_mime(tmp_path: Path) -> None:
    raw = (
        b"From: Shop <shop@example.com>\r\nTo: ana@example.org\r\nSubject: Raw hello\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello raw.\r\n"
    )
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        answer = await mux.call(
            send,
            mux.url,
            Destination={"ToAddresses": ["ana@example.org"], "BccAddresses": ["audit@example.com"]},
            Content={"Raw": {"Data": raw}},
        )
        (record,) = await mux.received("other")

    body = record["body"]
    assert answer["MessageId"]
    assert body["from"] == {"email": "shop@example.com", "name": "Shop"}
    assert body["subject"] == "Raw hello"
    assert body["personalizations"][0]["bcc"] == [{"email": "audit@example.com"}]
    assert body["content"][0]["value"].strip() == "Hello raw."


# -- (b) passed through to SES ----------------------------------------------------------


async def test_an_ses_vendor_gets_the_request_unchanged_signed_with_its_own_keys(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"aws": "ses"}) as mux:
        answer = await mux.call(send, mux.url, **TEMPLATE)
        (stored,) = mux.emulators["aws"].messages
        (record,) = await mux.received("aws")
        mailmux_id = answer["ResponseMetadata"]["HTTPHeaders"]["x-mailmux-message-id"]
        found = await mux.message(mailmux_id)

    # boto3 writes the body once; what it sent is what the vendor got, byte for byte.
    assert orjson.loads(stored.raw_body) == TEMPLATE
    assert answer["MessageId"] == stored.id  # the emulator's own answer, passed back
    assert record["headers"]["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=…NDOR/{record['headers']['x-amz-date'][:8]}/eu-west-1/ses/"
    )  # AKIAVENDOR, not the client's key
    attempt = next(e for e in found["events"] if e.get("vendor") == "aws")
    assert attempt["mode"] == "passed_through"


async def test_the_passed_through_body_is_byte_identical(tmp_path: Path) -> None:
    body = orjson.dumps({**TEMPLATE, "Unmodelled": {"Kept": [1, 2]}}) + b"  "
    async with router(tmp_path, {"aws": "ses"}) as mux:
        status, headers, answer = await post(mux.url, body, signed(mux.url, body))
        (stored,) = mux.emulators["aws"].messages

    assert status == 200
    assert stored.raw_body == body
    assert answer == {"MessageId": stored.id}
    assert headers["X-Mailmux-Message-Id"]
    assert "Content-Type" in headers


# -- (c) SES-only fields go to SES vendors only ------------------------------------------


async def test_a_template_goes_only_to_ses_and_waits_for_it(tmp_path: Path) -> None:
    async with router(tmp_path, {"aws": "ses", "other": "sendgrid"}) as mux:
        await mux.faults("aws", {"status": 503})
        answer = await mux.call(send, mux.url, **TEMPLATE)
        message_id = answer["MessageId"]  # queued: success, with mailmux's id
        queued = await mux.message(message_id)
        assert queued["state"] == "queued"
        await mux.faults("aws", {})

        async def delivered() -> bool:
            return (await mux.message(message_id))["state"] == "sent"

        assert await eventually(delivered)
        assert len(await mux.received("aws")) == 1
        assert await mux.received("other") == []
        found = await mux.message(message_id)
    assert {a["vendor"] for a in found["attempts"]} == {"aws"}  # sendgrid never asked
    assert found["attempts"][-1]["mode"] == "passed_through"


# -- (e) errors through the SDK -----------------------------------------------------------


async def test_a_bad_request_raises_bad_request_exception(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        client = ses_client(mux.url)
        bad = {**SIMPLE, "Destination": {"ToAddresses": ["not an address"]}}
        with pytest.raises(client.exceptions.BadRequestException) as raised:
            await mux.call(client.send_email, **bad)
        client.close()
        await nothing_kept(mux)
    assert raised.value.response["Error"]["Code"] == "BadRequestException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    ("name", "key", "code"),
    [
        (CLIENT_NAME, "wrong-secret", "SignatureDoesNotMatch"),
        ("AKIASOMEONE", "unknown-secret", "SignatureDoesNotMatch"),
        (CLIENT_NAME, None, "MissingAuthenticationTokenException"),
    ],
    ids=["wrong-secret", "unknown-key", "unsigned"],
)
async def test_an_unknown_key_raises_client_error(
    tmp_path: Path, name: str, key: str | None, code: str
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        if key is None:
            client = ses_client(mux.url, config=Config(signature_version=UNSIGNED))
        else:
            client = ses_client(mux.url, name=name, key=key)
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            await mux.call(client.send_email, **SIMPLE)
        client.close()
        await nothing_kept(mux)
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_a_signature_more_than_15_minutes_old_is_refused(tmp_path: Path) -> None:
    body = orjson.dumps(SIMPLE)
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        stale = signed(mux.url, body, at=time.time() - 16 * 60)
        fresh = signed(mux.url, body, at=time.time() - 14 * 60)
        assert (await post(mux.url, body, stale))[0] == 403
        tampered = signed(mux.url, body)
        assert (await post(mux.url, body.replace(b"Hello", b"Hallo"), tampered))[0] == 403
        await nothing_kept(mux)
        assert (await post(mux.url, body, fresh))[0] == 200


async def test_a_message_every_vendor_refuses_raises_message_rejected(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        await mux.faults("other", {"status": 400})
        client = ses_client(mux.url)
        with pytest.raises(client.exceptions.MessageRejected) as raised:
            await mux.call(client.send_email, **SIMPLE)
        client.close()
    headers = raised.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert headers["x-mailmux-message-id"] in raised.value.response["Error"]["Message"]


# -- (f) hostile inputs -------------------------------------------------------------------


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = orjson.loads(orjson.dumps(SIMPLE))
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


INJECTED_NAME = base64.b64encode(b"Shop\r\nBcc: x@example.com").decode()
HOSTILE = {
    "invalid-json": (b'{"Content": ', "BadRequestException"),
    "not-an-object": (b"[1, 2]", "BadRequestException"),
    "no-content": (orjson.dumps({"FromEmailAddress": "a@example.com"}), "BadRequestException"),
    "no-sender": (
        orjson.dumps({k: v for k, v in SIMPLE.items() if k != "FromEmailAddress"}),
        "BadRequestException",
    ),
    "bad-address": (
        orjson.dumps(_with(("Destination", "ToAddresses"), ["ana@@example.org"])),
        "BadRequestException",
    ),
    "crlf-header-name": (
        orjson.dumps(
            _with(("Content", "Simple", "Headers"), [{"Name": "X-A\r\nBcc", "Value": "v"}])
        ),
        "BadRequestException",
    ),
    "crlf-header-value": (
        orjson.dumps(
            _with(("Content", "Simple", "Headers"), [{"Name": "X-A", "Value": "v\r\nBcc: x@y.z"}])
        ),
        "BadRequestException",
    ),
    "crlf-subject": (
        orjson.dumps(_with(("Content", "Simple", "Subject", "Data"), "Hi\r\nBcc: x@example.com")),
        "BadRequestException",
    ),
    "crlf-display-name": (
        orjson.dumps(_with(("FromEmailAddress",), "Shop\r\nBcc: x@example.com <shop@example.com>")),
        "BadRequestException",
    ),
    "crlf-encoded-display-name": (
        orjson.dumps(
            _with(
                ("FromEmailAddress",),
                f"=?utf-8?b?{INJECTED_NAME}?= <shop@example.com>",
            )
        ),
        "BadRequestException",
    ),
    "51-recipients": (
        orjson.dumps(
            _with(("Destination", "ToAddresses"), [f"r{i}@example.com" for i in range(51)])
        ),
        "MessageRejected",
    ),
}


@pytest.mark.parametrize(("body", "kind"), HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_bodies_are_refused_as_ses_refuses_them(
    tmp_path: Path, body: bytes, kind: str
) -> None:
    async with router(tmp_path, {"other": "sendgrid", "aws": "ses"}) as mux:
        status, headers, answer = await post(mux.url, body, signed(mux.url, body))
        await nothing_kept(mux)
    assert status == 400
    assert headers["x-amzn-ErrorType"] == kind
    assert answer["__type"] == kind and answer["message"]


SMALL = {"max_request_bytes": 4096, "max_message_bytes": 4096, "max_attachment_bytes": 4096}


async def test_an_oversize_body_is_message_rejected(tmp_path: Path) -> None:
    body = orjson.dumps(_with(("Content", "Simple", "Body", "Text", "Data"), "x" * 5000))
    async with router(tmp_path, {"other": "sendgrid"}, limits=SMALL) as mux:
        status, headers, _ = await post(mux.url, body, signed(mux.url, body))
        await nothing_kept(mux)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "MessageRejected")


# -- (g) Idempotency-Key -----------------------------------------------------------------


async def test_the_idempotency_key_replays_and_refuses_another_body(tmp_path: Path) -> None:
    body = orjson.dumps(SIMPLE)
    other = orjson.dumps(_with(("Content", "Simple", "Subject", "Data"), "Other"))
    key = {"Idempotency-Key": "order-7"}
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        first = await post(mux.url, body, signed(mux.url, body, **key))
        again = await post(mux.url, body, signed(mux.url, body, **key))
        reused = await post(mux.url, other, signed(mux.url, other, **key))
        assert len(await mux.received("other")) == 1
    assert first[0] == again[0] == 200
    assert first[2] == again[2]
    assert again[1]["Idempotent-Replayed"] == "true"
    assert (reused[0], reused[1]["x-amzn-ErrorType"]) == (409, "ConflictException")


# -- (h) property-based: never a 5xx -------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = ("FromEmailAddress", "Destination", "ReplyToAddresses", "Content", "EmailTags")
_PATHS = [
    ("FromEmailAddress",),
    ("Destination",),
    ("Destination", "ToAddresses"),
    ("Content",),
    ("Content", "Simple"),
    ("Content", "Simple", "Subject"),
    ("Content", "Simple", "Subject", "Data"),
    ("Content", "Simple", "Body"),
    ("Content", "Simple", "Body", "Text"),
    ("Content", "Simple", "Headers"),
    ("Content", "Simple", "Attachments"),
    ("Content", "Raw"),
    ("Content", "Template"),
    ("EmailTags",),
    ("ListManagementOptions",),
]
_mutated = st.builds(
    lambda path, value: orjson.dumps(_with(path, value)),
    st.sampled_from(_PATHS),
    _json | st.text(max_size=30) | st.lists(st.text(max_size=20), max_size=3),
)
_header_lists = st.lists(
    st.fixed_dictionaries({"Name": st.text(max_size=12), "Value": st.text(max_size=20)}),
    max_size=3,
)
_near_valid = st.builds(
    lambda path, value: orjson.dumps(_with(path, value)),
    st.sampled_from(
        [("Content", "Simple", "Headers"), ("ReplyToAddresses",), ("Destination", "CcAddresses")]
    ),
    _header_lists | st.lists(st.emails() | st.text(max_size=30), max_size=3),
)
_WORD_PARTS = ["=?", "?=", "?q?", "?b?", "utf-8", "x-nope", "=C3", "=0D=0A", "DQo=", '"', "<"]
_encoded_names = st.builds(
    lambda parts: orjson.dumps(_with(("FromEmailAddress",), "".join(parts) + " <a@example.com>")),
    st.lists(st.sampled_from(_WORD_PARTS) | st.text(max_size=3), max_size=8),
)
_bodies = _encoded_names | _near_valid | _mutated | st.binary(max_size=64) | _json.map(orjson.dumps)


def _fuzz(url: str) -> None:
    session = requests.Session()

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        body=_bodies,
        sign=st.sampled_from(["good", "good", "good", "bad", "none"]),
        extra=st.text(max_size=20),
    )
    def check(body: bytes, sign: str, extra: str) -> None:
        headers = {"Content-Type": "application/json"}
        if sign != "none":
            headers = signed(url, body, key=CLIENT_KEY if sign == "good" else "nope")
        if extra.isprintable() and extra.isascii():
            headers["X-Mailmux-Class"] = extra
        answer = session.post(url + PATH, data=body, headers=headers, timeout=10)
        assert answer.status_code < 500, answer.text
        if answer.status_code >= 400:
            assert answer.headers["x-amzn-ErrorType"]
            assert orjson.loads(answer.content)["__type"]

    check()
    session.close()


async def test_random_and_mutated_requests_never_get_a_5xx(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        await mux.call(_fuzz, mux.url)
        answer = await mux.call(send, mux.url, **SIMPLE)
    assert answer["MessageId"]
