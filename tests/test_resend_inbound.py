"""The Resend shape over real sockets: the official `resend` SDK pointed at mailmux.

The SDK keeps its settings in module globals (`resend.api_url`, `resend.api_key`);
`sdk` sets them through monkeypatch, so every test gets them back as they were.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router
from vendor_kit import PDF, PNG

from mailmux.message import DEFAULT_LIMITS
from mailmux.spool.base import IdempotencyConflict
from mailmux.vendors.inbound import ShapeRequest
from mailmux.vendors.resend.inbound import ResendInbound

resend = pytest.importorskip("resend", reason="the resend SDK is not installed")

PLAIN = {"from": "shop@example.com", "to": "ana@example.org", "subject": "Hi", "text": "Hello"}
IDS_HEADER = "X-Mailmux-Message-Id"


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Callable[[Router], Any]:
    """Points the resend module at a router (only `api_url` changes) with the client key."""
    monkeypatch.setattr(resend, "api_key", CLIENT_KEY)

    def point(at: Router) -> Any:
        monkeypatch.setattr(resend, "api_url", at.url)
        return resend

    return point


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 10.0) -> None:
    """Poll `check` until it holds, for at most `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds}s: {what}")


async def nothing_kept(at: Router) -> bool:
    """No message was recorded at all: none sent, none spooled, none failed."""
    await at.app.store.flush()
    counts = await at.app.store.count_by_state()
    return not any(counts.values())


def post(at: Router, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """A raw request the SDK would not send, with the client key unless `headers` say."""
    sent = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    return requests.post(f"{at.url}{path}", data=body, headers={**sent, **(headers or {})})


# -- (a) translated to another ESP -------------------------------------------------------


async def test_a_rich_sdk_email_reaches_sendgrid_translated(
    tmp_path: Path, sdk: Callable[[Router], Any]
) -> None:
    params = {
        "from": "Alice Sender <alice@example.com>",
        "to": ["Bob Brown <bob@example.com>", "ana@example.org"],
        "cc": "carol@example.com",
        "bcc": ["dan@example.com"],
        "reply_to": "Replies <replies@example.com>",
        "subject": "Your receipt",
        "html": '<p>Thanks <img src="cid:logo1"></p>',
        "text": "Thanks",
        "headers": {"X-Custom": "v1"},
        "attachments": [
            {"filename": "receipt.pdf", "content": list(PDF), "content_type": "application/pdf"},
            {
                "filename": "logo.png",
                "content": base64.b64encode(PNG).decode(),
                "content_type": "image/png",
                "content_id": "logo1",
            },
        ],
        "tags": [{"name": "campaign", "value": "spring"}, {"name": "receipt"}],
    }
    async with router(tmp_path, {"other": "sendgrid"}) as at:
        answer = await at.call(sdk(at).Emails.send, params)
        (stored,) = await at.received("other")
        found = await at.message(answer["id"])

    assert set(answer) == {"id", "http_headers"}  # the SDK's documented return value
    assert answer["http_headers"][IDS_HEADER] == answer["id"]
    assert found["state"] == "sent"
    body = stored["body"]
    (person,) = body["personalizations"]
    assert person["to"] == [
        {"email": "bob@example.com", "name": "Bob Brown"},
        {"email": "ana@example.org"},
    ]
    assert person["cc"] == [{"email": "carol@example.com"}]
    assert person["bcc"] == [{"email": "dan@example.com"}]
    assert person["custom_args"] == {"campaign": "spring"}
    assert body["from"] == {"email": "alice@example.com", "name": "Alice Sender"}
    assert body["reply_to"] == {"email": "replies@example.com", "name": "Replies"}
    assert body["subject"] == "Your receipt"
    assert body["content"] == [
        {"type": "text/plain", "value": "Thanks"},
        {"type": "text/html", "value": params["html"]},
    ]
    assert body["headers"] == {"X-Custom": "v1"}
    assert body["categories"] == ["receipt"]
    pdf, logo = body["attachments"]
    assert base64.b64decode(pdf["content"]) == PDF
    assert (pdf["filename"], pdf["type"], pdf["disposition"]) == (
        "receipt.pdf",
        "application/pdf",
        "attachment",
    )
    assert base64.b64decode(logo["content"]) == PNG
    assert (logo["type"], logo["disposition"], logo["content_id"]) == (
        "image/png",
        "inline",
        "logo1",
    )
    assert stored["headers"]["authorization"] != f"Bearer {CLIENT_KEY}"
    received = next(e for e in found["events"] if e["kind"] == "received")
    assert (received["ingress"], received["client"]) == ("resend", CLIENT_NAME)
    assert [a["mode"] for a in found["attempts"]] == ["translated"]


# -- (b) passed through to Resend --------------------------------------------------------


async def test_a_resend_vendor_gets_the_request_byte_for_byte_with_its_own_key(
    tmp_path: Path, sdk: Callable[[Router], Any]
) -> None:
    params = {**PLAIN, "topic_id": "topic_77", "template": {"id": "welcome", "variables": {"n": 3}}}
    del params["text"]
    async with router(tmp_path, {"own": "resend"}) as at:
        answer = await at.call(sdk(at).Emails.send, params)
        (stored,) = at.emulators["own"].messages
        mailmux_id = answer["http_headers"][IDS_HEADER]
        found = await at.message(mailmux_id)

    # requests encodes `json=` this way: what the SDK put on the wire.
    assert stored.raw_body == json.dumps(params, allow_nan=False).encode()
    assert stored.headers["authorization"] == "Bearer …_key"  # re_vendor_key, not the client's
    assert stored.headers["idempotency-key"] == mailmux_id
    assert answer["id"] == stored.id  # Resend's own answer, as Resend gave it
    assert [a["mode"] for a in found["attempts"]] == ["passed_through"]
    assert found["vendor_message_id"] == stored.id


# -- (c) a field only Resend can carry ------------------------------------------------------


async def test_an_exclusive_field_waits_for_resend_and_is_sent_there_once(
    tmp_path: Path, sdk: Callable[[Router], Any]
) -> None:
    params = {**PLAIN, "scheduled_at": "2030-12-24T10:00:00Z"}
    vendors = {"own": "resend", "other": "sendgrid"}
    async with router(tmp_path, vendors, weights={"own": 1, "other": 5}) as at:
        await at.faults("own", {"status": 503})
        answer = await at.call(sdk(at).Emails.send, params)
        queued = await at.message(answer["id"])
        await at.faults("own", {})

        async def delivered() -> bool:
            return bool((await at.message(answer["id"]))["state"] == "sent")

        await until(delivered, "the spooled message is sent to Resend")
        stored = at.emulators["own"].messages
        other = await at.received("other")

    assert answer["id"] == answer["http_headers"][IDS_HEADER]  # mailmux's id: queued is success
    assert queued["state"] == "queued"
    assert len(stored) == 1
    assert stored[0].body["scheduled_at"] == params["scheduled_at"]
    assert other == []


def test_the_fields_only_resend_can_carry_are_named_and_react_is_dropped() -> None:
    email = {
        **PLAIN,
        "template": {"id": "welcome"},
        "scheduled_at": "in 1 min",
        "topic_id": "t1",
        "react": None,
        "future_field": 1,
        "attachments": [{"path": "https://example.com/a.pdf", "filename": "a.pdf"}],
        "tags": [{"name": "k", "value": "1"}, {"name": "k", "value": "2"}],
    }
    request = ShapeRequest("emails", "POST", "/emails", "", {}, {}, json.dumps(email).encode())
    (message,) = ResendInbound().parse(request, now=0.0, limits=DEFAULT_LIMITS)

    assert message.original is not None
    assert message.original.exclusive == (
        "template",
        "scheduled_at",
        "topic_id",
        "future_field",
        "attachments[0].path",
        "tags[1]",
    )
    assert message.original.body is request.body
    assert (message.attachments, message.metadata) == ((), {"k": "1"})


# -- (d) batch ------------------------------------------------------------------------------


async def test_a_batch_is_answered_per_email_with_mailmux_ids(
    tmp_path: Path, sdk: Callable[[Router], Any]
) -> None:
    emails = [{**PLAIN, "to": f"r{i}@example.org", "subject": f"n{i}"} for i in range(3)]
    async with router(tmp_path, {"other": "postmark"}) as at:
        answer = await at.call(sdk(at).Batch.send, emails)
        stored = await at.received("other")
        states = [(await at.message(item["id"]))["state"] for item in answer["data"]]

    ids = [item["id"] for item in answer["data"]]
    assert set(answer) == {"data", "http_headers"}
    assert answer["http_headers"][IDS_HEADER] == ", ".join(ids)
    assert states == ["sent"] * 3
    assert sorted(s["body"]["Subject"] for s in stored) == ["n0", "n1", "n2"]


async def test_a_batch_email_no_vendor_can_carry_is_an_error_at_its_index(
    tmp_path: Path, sdk: Callable[[Router], Any]
) -> None:
    emails = [PLAIN, {**PLAIN, "scheduled_at": "in 1 hour"}, {**PLAIN, "subject": "third"}]
    async with router(tmp_path, {"other": "sendgrid"}) as at:
        answer = await at.call(sdk(at).Batch.send, emails)
        stored = await at.received("other")

    first, _, third = answer["http_headers"][IDS_HEADER].split(", ")
    assert answer["data"] == [{"id": first}, {"id": third}]
    (error,) = answer["errors"]
    assert error["index"] == 1
    assert "scheduled_at" in error["message"]
    assert len(stored) == 2


async def test_a_batch_of_one_passes_through_as_a_batch(
    tmp_path: Path, sdk: Callable[[Router], Any]
) -> None:
    async with router(tmp_path, {"own": "resend"}) as at:
        answer = await at.call(sdk(at).Batch.send, [PLAIN])
        (stored,) = at.emulators["own"].messages

    assert stored.raw_body == json.dumps([PLAIN]).encode()
    assert answer["data"] == [{"id": f"{stored.id}-0"}]


# -- (e) errors through the SDK ---------------------------------------------------------------


async def test_the_sdk_raises_its_usual_exceptions(
    tmp_path: Path, sdk: Callable[[Router], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = resend.exceptions
    async with router(tmp_path, {"other": "sendgrid"}) as at:
        client = sdk(at)
        with pytest.raises(errors.MissingRequiredFieldsError) as missing:
            await at.call(client.Emails.send, {k: v for k, v in PLAIN.items() if k != "to"})
        with pytest.raises(errors.ValidationError) as invalid:
            await at.call(client.Emails.send, {**PLAIN, "from": "not an address"})
        monkeypatch.setattr(resend, "api_key", "re_unknown_key")
        with pytest.raises(errors.InvalidApiKeyError) as unknown:
            await at.call(client.Emails.send, PLAIN)
        with pytest.raises(errors.InvalidApiKeyError):
            await at.call(client.Batch.send, [PLAIN])
        stored = await at.received("other")
        assert await nothing_kept(at)

    assert (missing.value.code, missing.value.error_type) == (422, "missing_required_field")
    assert missing.value.message == "Missing `to` field."
    assert (invalid.value.code, invalid.value.error_type) == (422, "validation_error")
    assert invalid.value.message.startswith("Invalid `from` field")
    assert (unknown.value.code, unknown.value.error_type) == (403, "invalid_api_key")
    assert stored == []


async def test_no_key_is_resend_s_401(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as at:
        answer = await at.call(
            post, at, "/emails", json.dumps(PLAIN).encode(), {"Authorization": ""}
        )

    assert answer.status_code == 401
    assert answer.json() == {
        "statusCode": 401,
        "message": "Missing API key in the authorization header.",
        "name": "missing_api_key",
    }


async def test_an_email_every_vendor_refuses_is_resend_s_rejection(
    tmp_path: Path, sdk: Callable[[Router], Any]
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as at:
        await at.faults("other", {"status": 400})
        with pytest.raises(resend.exceptions.ValidationError) as refused:
            await at.call(sdk(at).Emails.send, PLAIN)
        found = await at.message(refused.value.headers[IDS_HEADER])

    assert (refused.value.code, refused.value.error_type) == (422, "validation_error")
    assert "refused by every provider" in refused.value.message
    assert "SG.vendor-key" not in refused.value.message
    assert found["state"] == "failed"


async def test_neither_sent_nor_spooled_is_resend_s_application_error(
    tmp_path: Path, sdk: Callable[[Router], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_spool(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    async with router(tmp_path, {"other": "sendgrid"}) as at:
        monkeypatch.setattr(at.app.deliverer, "submit", broken_spool)
        with pytest.raises(resend.exceptions.ApplicationError) as unavailable:
            await at.call(sdk(at).Emails.send, PLAIN)

    assert (unavailable.value.code, unavailable.value.error_type) == (500, "application_error")
    assert "disk full" not in unavailable.value.message


# -- (f) hostile input --------------------------------------------------------------------------


def body(**change: Any) -> bytes:
    return json.dumps({**PLAIN, **change}).encode()


HOSTILE = [
    pytest.param("/emails", b'{"from": "a@', 400, "validation_error", id="invalid-json"),
    pytest.param("/emails/batch", b"[{]", 400, "validation_error", id="invalid-json-batch"),
    pytest.param(
        "/emails", json.dumps({"to": "b@example.com"}).encode(), 422, "missing_required_field",
        id="missing-from",
    ),
    pytest.param("/emails", body(to="b@@example"), 422, "validation_error", id="bad-address"),
    pytest.param(
        "/emails", body(headers={"X-Evil\r\nBcc": "x"}), 422, "validation_error",
        id="crlf-header-name",
    ),
    pytest.param(
        "/emails", body(headers={"X-Ok": "v\r\nBcc: victim@example.com"}), 422,
        "validation_error", id="crlf-header-value",
    ),
    pytest.param(
        "/emails", body(subject="Hi\r\nBcc: victim@example.com"), 422, "validation_error",
        id="crlf-subject",
    ),
    pytest.param(
        "/emails", body(**{"from": "Eve\r\nBcc: v@example.com <eve@example.com>"}), 422,
        "validation_error", id="crlf-display-name",
    ),
    pytest.param(
        "/emails", body(to=["Eve\nX <eve@example.com>"]), 422, "validation_error",
        id="lf-recipient-name",
    ),
    pytest.param(
        "/emails/batch", json.dumps([PLAIN, {**PLAIN, "subject": "a\rb"}]).encode(), 422,
        "validation_error", id="crlf-in-one-batch-email",
    ),
    pytest.param(
        "/emails", body(attachments=[{"filename": "a.txt", "content": "@@@"}]), 422,
        "invalid_attachment", id="bad-base64",
    ),
    pytest.param("/emails", body(tags=[{"name": "a b"}]), 422, "validation_error", id="bad-tag"),
    pytest.param("/emails/batch", b"[]", 422, "validation_error", id="empty-batch"),
    pytest.param("/emails", b"[]", 422, "validation_error", id="not-an-object"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "sent", "status", "name"), HOSTILE)
async def test_hostile_requests_get_resend_s_4xx_and_reach_no_one(
    tmp_path: Path, path: str, sent: bytes, status: int, name: str
) -> None:
    async with router(tmp_path, {"own": "resend", "other": "sendgrid"}) as at:
        answer = await at.call(post, at, path, sent)
        assert await nothing_kept(at)
        reached = [*await at.received("own"), *await at.received("other")]

    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()
    assert (error["statusCode"], error["name"]) == (status, name)
    assert isinstance(error["message"], str)
    assert reached == []


async def test_an_oversize_body_is_413_in_resend_s_shape(tmp_path: Path) -> None:
    limits = {"max_request_bytes": 2048, "max_message_bytes": 1024, "max_attachment_bytes": 1024}
    async with router(tmp_path, {"other": "sendgrid"}, limits=limits) as at:
        answer = await at.call(post, at, "/emails", body(text="x" * 4096))
        assert await nothing_kept(at)
        reached = await at.received("other")

    assert answer.status_code == 413
    assert answer.json()["name"] == "validation_error"
    assert reached == []


# -- (g) Idempotency-Key -------------------------------------------------------------------------


async def test_the_sdk_s_idempotency_key_keeps_resend_s_meaning(
    tmp_path: Path, sdk: Callable[[Router], Any]
) -> None:
    key = {"idempotency_key": "order-42/confirm"}
    async with router(tmp_path, {"other": "sendgrid"}) as at:
        client = sdk(at)
        first = await at.call(client.Emails.send, PLAIN, key)
        again = await at.call(client.Emails.send, PLAIN, key)
        with pytest.raises(client.exceptions.ResendError) as reused:
            await at.call(client.Emails.send, {**PLAIN, "subject": "Other"}, key)
        stored = await at.received("other")

    assert again["id"] == first["id"]
    assert again["http_headers"]["Idempotent-Replayed"] == "true"
    assert len(stored) == 1
    assert (reused.value.code, reused.value.error_type) == (409, "invalid_idempotent_request")
    assert reused.value.message == "Same idempotency key used with a different request payload."


async def test_a_key_another_node_holds_is_concurrent_idempotent_requests(
    tmp_path: Path, sdk: Callable[[Router], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one node, a second request with a key in flight shares the first's answer; the
    store refuses a key that a request on another node is still sending under."""

    async def held_elsewhere(*args: Any, **kwargs: Any) -> Any:
        raise IdempotencyConflict("order-7")

    async with router(tmp_path, {"other": "sendgrid"}) as at:
        monkeypatch.setattr(at.app.deliverer, "submit", held_elsewhere)
        with pytest.raises(resend.exceptions.ResendError) as concurrent:
            await at.call(sdk(at).Emails.send, PLAIN, {"idempotency_key": "order-7"})
        stored = await at.received("other")

    assert (concurrent.value.code, concurrent.value.error_type) == (
        409,
        "concurrent_idempotent_requests",
    )
    assert concurrent.value.message.startswith("Same idempotency key used while")
    assert stored == []


# -- (h) property: no input makes mailmux fail ----------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_NASTY = st.sampled_from(["", " ", "\r\n", "a\nb", "\x00", "Zoë <z@example.com>", "<>", "@", "=?"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT | _NASTY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT | _NASTY, inner, max_size=4),
    max_leaves=12,
)
_FIELDS = st.sampled_from(
    [
        *PLAIN,
        *("cc", "bcc", "reply_to", "html", "headers", "attachments", "tags", "template"),
        *("scheduled_at", "topic_id", "react", "unknown"),
    ]
)
_ATTACHMENT = st.fixed_dictionaries(
    {"filename": _TEXT | _NASTY, "content": _JSON | st.just("aGk=") | st.just([104, 105])},
    optional={"content_id": _TEXT | _NASTY, "content_type": _TEXT, "path": _TEXT},
)
_MUTATION = st.tuples(_FIELDS, _JSON | _NASTY | st.lists(_ATTACHMENT, max_size=2))
_EMAIL = st.lists(_MUTATION, max_size=3).map(lambda changes: {**PLAIN, **dict(changes)})
_BODY = (
    st.binary(max_size=64)
    | _JSON.map(lambda doc: json.dumps(doc).encode())
    | _EMAIL.map(lambda email: json.dumps(email).encode())
    | st.lists(_EMAIL, max_size=3).map(lambda emails: json.dumps(emails).encode())
)
#: Printable ASCII: other bytes are refused by the HTTP parser, before any shape sees them.
_HEADER_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.sampled_from([f"Bearer {CLIENT_KEY}", "Bearer ", "Basic x", ""])
        | _HEADER_VALUE,
        "Idempotency-Key": _HEADER_VALUE,
        "X-Mailmux-Class": _HEADER_VALUE,
        "X-Mailmux-Deadline": _HEADER_VALUE | st.sampled_from(["-1", "1e309", "30"]),
        "Content-Type": _HEADER_VALUE,
    },
)


async def test_no_request_makes_mailmux_answer_5xx_or_stop_answering(tmp_path: Path) -> None:
    async with router(tmp_path, {"own": "resend", "other": "sendgrid"}) as at:
        session = requests.Session()

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(path=st.sampled_from(["/emails", "/emails/batch"]), body=_BODY, headers=_HEADERS)
        def property_holds(path: str, body: bytes, headers: dict[str, str]) -> None:
            sent = {"Authorization": f"Bearer {CLIENT_KEY}", **headers}
            answer = session.post(f"{at.url}{path}", data=body, headers=sent, timeout=10)
            assert answer.status_code < 500, answer.text
            assert "application/json" in answer.headers["Content-Type"]
            document = answer.json()
            if answer.status_code >= 400:
                assert document["statusCode"] == answer.status_code
                assert isinstance(document["name"], str)
                assert isinstance(document["message"], str)
            else:
                assert isinstance(document, dict)
                assert "statusCode" not in document

        await at.call(property_holds)
        still = await at.call(post, at, "/emails", json.dumps(PLAIN).encode())
        session.close()

    assert still.status_code == 200
