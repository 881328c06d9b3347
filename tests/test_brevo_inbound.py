"""Brevo's send API served by mailmux, driven by the official brevo-python SDK.

The SDK is pointed at mailmux by its `base_url` alone (`<mailmux>/v3`). Its
OAuth constructor defaults are read from BREVO_CLIENT_ID/SECRET when brevo is
imported, so `Sdk` passes them as None explicitly: no token request, only the
`api-key` header, whatever the environment says. It also hands the SDK an
httpx client it closes after each call, so no pooled socket outlives a test.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router

from mailmux.message import DEFAULT_LIMITS, Message
from mailmux.vendors.brevo.inbound import BrevoInbound
from mailmux.vendors.inbound import Failure, ShapeRequest

brevo = pytest.importorskip("brevo", reason="brevo-python is not installed")
emails = pytest.importorskip("brevo.transactional_emails")
errors = pytest.importorskip("brevo.errors")
api_error = pytest.importorskip("brevo.core.api_error")

PATH = "/v3/smtp/email"
PDF = b"%PDF-1.4 tiny\n%%EOF\n"
#: Limits small enough for a test to exceed the request size.
SMALL = {"max_request_bytes": 4096, "max_message_bytes": 4096, "max_attachment_bytes": 4096}
MAILMUX_ID = re.compile(r"<([0-9a-f]+)@mailmux>")


class Sdk:
    """brevo-python pointed at mailmux; each call on a connection pool it then closes."""

    def __init__(self, r: Router, key: str = CLIENT_KEY) -> None:
        self.url = f"{r.url}/v3"
        self.key = key

    def send(self, **fields: Any) -> Any:
        with httpx.Client() as pool:
            return self._client(pool).transactional_emails.send_transac_email(**fields)

    def send_raw(self, **fields: Any) -> Any:
        with httpx.Client() as pool:
            emails_api = self._client(pool).transactional_emails
            return emails_api.with_raw_response.send_transac_email(**fields)

    def _client(self, pool: httpx.Client) -> Any:
        return brevo.Brevo(
            api_key=self.key,
            base_url=self.url,
            client_id=None,
            client_secret=None,
            httpx_client=pool,
        )


def plain(**changes: Any) -> dict[str, Any]:
    """A small valid request body (JSON names); `changes` replace or add fields."""
    body: dict[str, Any] = {
        "sender": {"email": "from@example.com", "name": "Shop"},
        "to": [{"email": "to@example.org"}],
        "subject": "Hi",
        "textContent": "Hello",
    }
    body.update(changes)
    return body


def mailmux_id(message_id: str) -> str:
    found = MAILMUX_ID.fullmatch(message_id)
    assert found is not None, message_id
    return found.group(1)


async def spooled(r: Router) -> int:
    """How many messages the store holds, in any state."""
    return sum((await r.app.store.count_by_state()).values())


async def until(check: Callable[[], Any], seconds: float = 10.0) -> None:
    """Poll an async `check` until it is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# -- (a) translated for another ESP ---------------------------------------------------


async def test_sdk_rich_message_reaches_another_esp_translated(tmp_path: Path) -> None:
    """Everything Brevo's API has; it has no inline (Content-ID) image, so none is sent."""
    async with router(tmp_path, {"other": "sendgrid"}) as r:

        def send() -> Any:
            return Sdk(r).send(
                sender=emails.SendTransacEmailRequestSender(email="from@example.com", name="Zoë"),
                to=[emails.SendTransacEmailRequestToItem(email="to@example.org", name="To One")],
                cc=[emails.SendTransacEmailRequestCcItem(email="cc@example.org", name="Cc")],
                bcc=[emails.SendTransacEmailRequestBccItem(email="bcc@example.org")],
                reply_to=emails.SendTransacEmailRequestReplyTo(
                    email="reply@example.com", name="Reply"
                ),
                subject="Hello ✓",
                html_content="<p>hi</p>",
                text_content="hi",
                attachment=[
                    emails.SendTransacEmailRequestAttachmentItem(
                        content=base64.b64encode(PDF).decode(), name="invoice.pdf"
                    )
                ],
                headers={
                    "X-Custom": "v1",
                    "X-Mailin-custom": '{"order": "42", "n": 7}',
                    "idempotencyKey": "3f1c9b1e-0000-4000-8000-000000000001",
                },
                tags=["tag-a", "tag-b"],
            )

        response = await r.call(send)

        (stored,) = await r.received("other")
        body = stored["body"]
        assert body["from"] == {"email": "from@example.com", "name": "Zoë"}
        (personalization,) = body["personalizations"]
        assert personalization["to"] == [{"email": "to@example.org", "name": "To One"}]
        assert personalization["cc"] == [{"email": "cc@example.org", "name": "Cc"}]
        assert personalization["bcc"] == [{"email": "bcc@example.org"}]
        assert personalization["custom_args"] == {"order": "42", "n": "7"}
        assert body["reply_to"] == {"email": "reply@example.com", "name": "Reply"}
        assert body["subject"] == "Hello ✓"
        assert body["content"] == [
            {"type": "text/plain", "value": "hi"},
            {"type": "text/html", "value": "<p>hi</p>"},
        ]
        (attachment,) = body["attachments"]
        assert (attachment["filename"], attachment["type"]) == ("invoice.pdf", "application/pdf")
        assert base64.b64decode(attachment["content"]) == PDF
        assert body["headers"] == {"X-Custom": "v1"}  # Brevo's own headers are not mail headers
        assert body["categories"] == ["tag-a", "tag-b"]

        assert isinstance(response, emails.SendTransacEmailResponse)
        message_id = mailmux_id(response.message_id)
        found = await r.message(message_id)
        assert found["state"] == "sent"
        (attempt,) = found["attempts"]
        assert (attempt["vendor"], attempt["mode"]) == ("other", "translated")
        received = next(e for e in found["events"] if e["kind"] == "received")
        assert (received["ingress"], received["client"]) == ("brevo", CLIENT_NAME)


# -- (b) pass-through to a Brevo vendor -----------------------------------------------------


async def test_same_esp_vendor_gets_the_request_byte_for_byte(tmp_path: Path) -> None:
    async with router(tmp_path, {"brevo": "brevo"}) as r:

        def send() -> Any:
            return Sdk(r).send_raw(
                to=[emails.SendTransacEmailRequestToItem(email="to@example.org", name="Jo")],
                template_id=7,
                params={"order": 42, "items": ["a", "b"]},
                headers={"X-Mailin-custom": "campaign-9"},
                request_options={"additional_body_parameters": {"unmodelled": {"x": [1, None]}}},
            )

        raw = await r.call(send)

        (stored,) = r.emulators["brevo"].messages
        assert stored.raw_body == raw.response.request.content  # the SDK's bytes, unchanged
        assert stored.body["unmodelled"] == {"x": [1, None]}
        assert stored.headers["api-key"] == "…ndor"  # the vendor's key, not the client's
        assert raw.status_code == 201
        assert raw.data.message_id == f"<{stored.id}@emulator.brevo.invalid>"  # Brevo's answer
        found = await r.message(raw.headers["x-mailmux-message-id"])
        (attempt,) = found["attempts"]
        assert (attempt["vendor"], attempt["mode"]) == ("brevo", "passed_through")


# -- (c) exclusive fields stay with Brevo, through an outage --------------------------------


async def test_exclusive_fields_wait_for_brevo_and_are_sent_once(tmp_path: Path) -> None:
    vendors = {"brevo": "brevo", "other": "sendgrid"}
    async with router(tmp_path, vendors, weights={"brevo": 1, "other": 5}) as r:
        await r.faults("brevo", {"status": 503})

        def send() -> Any:
            return Sdk(r).send(**_snake(plain(templateId=3, params={"a": 1})))

        response = await r.call(send)

        message_id = mailmux_id(response.message_id)
        found = await r.message(message_id)
        assert found["state"] == "queued"
        assert {a["vendor"] for a in found["attempts"]} == {"brevo"}
        assert await r.received("other") == []

        await r.faults("brevo", {})

        async def sent() -> bool:
            state: str = (await r.message(message_id))["state"]
            return state == "sent"

        await until(sent)
        assert len(await r.received("brevo")) == 1
        assert await r.received("other") == []


async def test_a_sandbox_request_is_never_translated_into_real_mail(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:

        def send() -> None:
            Sdk(r).send(**_snake(plain(headers={"X-Sib-Sandbox": "drop"})))

        with pytest.raises(errors.BadRequestError) as raised:
            await r.call(send)
        assert raised.value.body["code"] == "invalid_parameter"
        assert "X-Sib-Sandbox" in raised.value.body["message"]
        assert await r.received("other") == []


@pytest.mark.parametrize(
    ("changes", "exclusive"),
    [
        ({}, ()),
        ({"templateId": 3, "params": {"a": 1}}, ("params", "templateId")),
        ({"params": {}, "batchId": None}, ()),  # empty and null ask for nothing
        ({"scheduledAt": "2030-01-01T00:00:00Z", "batchId": "b"}, ("batchId", "scheduledAt")),
        ({"sender": {"id": 2}}, ("sender.id",)),
        ({"attachment": [{"url": "https://x.example/a.pdf"}]}, ("attachment.url",)),
        ({"headers": {"X-Sib-Sandbox": "drop", "X-A": "1"}}, ("headers.X-Sib-Sandbox",)),
        ({"headers": {"sender.ip": "1.2.3.4"}}, ("headers.sender.ip",)),
        ({"headers": {"Message-ID": "<a@b>"}}, ("headers.Message-ID",)),
        ({"headers": {"idempotencyKey": "k", "X-Mailin-custom": "m"}}, ()),
        (
            {"unknownField": 5, "to": [{"email": "t@x.org", "extra": 1}]},
            ("to.extra", "unknownField"),
        ),
        (
            {"messageVersions": [{"to": [{"email": "t@x.org"}], "params": {"a": 1}}]},
            ("messageVersions.params",),
        ),
    ],
)
def test_fields_only_brevo_can_carry_are_named_exclusive(
    changes: dict[str, Any], exclusive: tuple[str, ...]
) -> None:
    (message,) = _parse(plain(**changes))
    assert message.original is not None
    assert message.original.exclusive == exclusive


def test_nulls_are_absent_and_metadata_comes_from_x_mailin_custom() -> None:
    body = plain(cc=None, bcc=None, replyTo=None, tags=None, attachment=None, htmlContent=None)
    body["to"] = [{"email": "to@example.org", "name": None}]
    body["headers"] = {"X-Mailin-custom": '{"order": "42", "n": 7}', "idempotencyKey": "k"}
    (message,) = _parse(body)
    assert (message.cc, message.bcc, message.reply_to, message.tags) == ((), (), (), ())
    assert message.to[0].name is None
    assert message.metadata == {"order": "42", "n": "7"}
    assert message.headers == {}
    (other,) = _parse(plain(headers={"X-Mailin-custom": "plain text"}))
    assert other.metadata == {"X-Mailin-custom": "plain text"}


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (Failure.INVALID_JSON, 400, "bad_request"),
        (Failure.INVALID_REQUEST, 400, "invalid_parameter"),
        (Failure.TOO_LARGE, 400, "invalid_parameter"),
        (Failure.UNAUTHORIZED, 401, "unauthorized"),
        (Failure.FORBIDDEN, 401, "unauthorized"),
        (Failure.REJECTED, 400, "invalid_parameter"),
        (Failure.EXPIRED, 400, "invalid_parameter"),
        (Failure.UNAVAILABLE, 503, "service_unavailable"),  # nothing accepted: the SDK retries
        (Failure.IDEMPOTENCY_REUSED, 400, "duplicate_parameter"),  # not 409: that is retried
        (Failure.IDEMPOTENCY_IN_FLIGHT, 400, "duplicate_parameter"),
    ],
)
def test_every_failure_has_brevos_status_and_code(failure: Failure, status: int, code: str) -> None:
    reply = BrevoInbound().failure("email", failure, "why")
    assert (reply.status, orjson.loads(reply.body)["code"]) == (status, code)
    assert reply.headers["Content-Type"] == "application/json"


def _parse(body: dict[str, Any]) -> list[Message]:
    raw = orjson.dumps(body)
    request = ShapeRequest("email", "POST", PATH, "", {}, {"api-key": "k"}, raw)
    found = BrevoInbound().parse(request, now=time.time(), limits=DEFAULT_LIMITS)
    if len(found) == 1:
        assert found[0].original is not None and found[0].original.body is raw
    return found


def _snake(body: dict[str, Any]) -> dict[str, Any]:
    """JSON field names → the SDK's keyword names."""
    return {re.sub(r"([A-Z])", r"_\1", name).lower(): value for name, value in body.items()}


# -- (d) message versions -------------------------------------------------------------------


async def test_versions_are_one_message_each_with_an_id_each(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:

        def send() -> Any:
            return Sdk(r).send(
                sender=emails.SendTransacEmailRequestSender(email="from@example.com"),
                subject="Default",
                text_content="Hello",
                message_versions=[
                    emails.SendTransacEmailRequestMessageVersionsItem(
                        to=[
                            emails.SendTransacEmailRequestMessageVersionsItemToItem(email="a@x.org")
                        ]
                    ),
                    emails.SendTransacEmailRequestMessageVersionsItem(
                        to=[
                            emails.SendTransacEmailRequestMessageVersionsItemToItem(email="b@x.org")
                        ],
                        subject="Yours",
                    ),
                ],
            )

        response = await r.call(send)

        ids = [mailmux_id(i) for i in response.message_ids]
        assert len(set(ids)) == 2
        stored = await r.received("other")
        by_to = {s["body"]["personalizations"][0]["to"][0]["email"]: s["body"] for s in stored}
        assert (by_to["a@x.org"]["subject"], by_to["b@x.org"]["subject"]) == ("Default", "Yours")
        for message_id in ids:
            assert (await r.message(message_id))["state"] == "sent"


async def test_versions_for_brevo_go_one_version_per_request_with_their_own_key(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"brevo": "brevo"}) as r:
        versions = [{"to": [{"email": "a@x.org"}]}, {"to": [{"email": "b@x.org"}]}]
        body = plain(to=None, messageVersions=versions, headers={"idempotencyKey": "batch-1"})
        answer = await _post(r, body)

        assert answer.status_code == 201
        assert len(answer.json()["messageIds"]) == 2
        stored = [s["body"] for s in await r.received("brevo")]
        assert sorted(s["messageVersions"][0]["to"][0]["email"] for s in stored) == [
            "a@x.org",
            "b@x.org",
        ]
        assert all(len(s["messageVersions"]) == 1 for s in stored)
        keys = {s["headers"]["idempotencyKey"] for s in stored}
        assert len(keys) == 2 and "batch-1" not in keys


# -- (e) errors through the SDK -------------------------------------------------------------


async def test_a_bad_request_raises_bad_request_error(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:

        def send() -> None:
            Sdk(r).send(
                sender=emails.SendTransacEmailRequestSender(email="from@example.com"),
                to=[emails.SendTransacEmailRequestToItem(email="to@example.org")],
                html_content="<p>no subject</p>",
            )

        with pytest.raises(errors.BadRequestError) as raised:
            await r.call(send)
        assert raised.value.body == {"code": "missing_parameter", "message": "subject is missing"}
        assert await r.received("other") == []


async def test_an_unknown_key_raises_api_error_401(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:

        def send() -> None:
            Sdk(r, key="xkeysib-not-a-client").send(**_snake(plain()))

        with pytest.raises(api_error.ApiError) as raised:
            await r.call(send)
        assert not isinstance(raised.value, errors.BadRequestError)
        assert raised.value.status_code == 401
        assert raised.value.body == {"code": "unauthorized", "message": "Key not found"}
        assert "vendor" not in str(raised.value)
        assert await r.received("other") == []


# -- (f) hostile inputs ----------------------------------------------------------------------

_HOSTILE: list[tuple[str, bytes | dict[str, Any], dict[str, str], int, str]] = [
    ("invalid-json", b'{"sender": ', {}, 400, "bad_request"),
    ("not-an-object", b"[1, 2]", {}, 400, "bad_request"),
    ("missing-sender", plain(sender=None), {}, 400, "missing_parameter"),
    ("missing-to", plain(to=[]), {}, 400, "missing_parameter"),
    ("bad-address", plain(to=[{"email": "not an address"}]), {}, 400, "invalid_parameter"),
    ("crlf-header-name", plain(headers={"X-A\r\nBcc: e@x.org": "v"}), {}, 400, "invalid_parameter"),
    (
        "crlf-header-value",
        plain(headers={"X-A": "v\r\nBcc: e@x.org"}),
        {},
        400,
        "invalid_parameter",
    ),
    ("crlf-subject", plain(subject="Hi\r\nBcc: e@x.org"), {}, 400, "invalid_parameter"),
    (
        "crlf-display-name",
        plain(to=[{"email": "to@example.org", "name": "Jo\r\nBcc: e@x.org"}]),
        {},
        400,
        "invalid_parameter",
    ),
    (
        "crlf-sender-name",
        plain(sender={"email": "from@example.com", "name": "S\nX: y"}),
        {},
        400,
        "invalid_parameter",
    ),
    (
        "bad-base64",
        plain(attachment=[{"name": "a.pdf", "content": "%%%"}]),
        {},
        400,
        "invalid_parameter",
    ),
    (
        "bad-extension",
        plain(attachment=[{"name": "a.exe", "content": "eA=="}]),
        {},
        400,
        "invalid_parameter",
    ),
    ("oversize", plain(textContent="x" * 5000), {}, 400, "invalid_parameter"),
    ("no-key", plain(), {"api-key": ""}, 401, "unauthorized"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [case[1:] for case in _HOSTILE],
    ids=[case[0] for case in _HOSTILE],
)
async def test_hostile_inputs_get_brevos_4xx_and_nothing_is_sent(
    tmp_path: Path, body: bytes | dict[str, Any], headers: dict[str, str], status: int, code: str
) -> None:
    async with router(tmp_path, {"brevo": "brevo", "other": "sendgrid"}, limits=SMALL) as r:
        answer = await _post(r, body, headers)

        assert answer.status_code == status, answer.text
        assert answer.json()["code"] == code
        assert set(answer.json()) == {"code", "message"}
        assert await r.received("brevo") == [] and await r.received("other") == []
        assert await spooled(r) == 0


async def _post(
    r: Router, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"api-key": CLIENT_KEY, "content-type": "application/json", **(headers or {})}

    def post() -> httpx.Response:
        return httpx.post(f"{r.url}{PATH}", content=raw, headers=sent, timeout=10)

    return await r.call(post)


# -- (g) the native Idempotency-Key ------------------------------------------------------------


async def test_idempotency_key_sends_once_and_refuses_another_body(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:

        def send(subject: str) -> Any:
            options = {"additional_headers": {"Idempotency-Key": "order-42"}}
            return Sdk(r).send(**_snake(plain(subject=subject)), request_options=options)

        first = await r.call(send, "Hi")
        again = await r.call(send, "Hi")

        assert again.message_id == first.message_id
        assert len(await r.received("other")) == 1
        with pytest.raises(errors.BadRequestError) as raised:
            await r.call(send, "Other")
        assert raised.value.body["code"] == "duplicate_parameter"
        assert len(await r.received("other")) == 1


# -- (h) property: no 5xx, no crash ------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["", "a@b.co", "x\r\ny", "Zoë", "eA==", "a.pdf", "<p>h</p>", "not@@"]),
    st.text(max_size=8),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_field_names = st.sampled_from(
    [
        "sender",
        "to",
        "cc",
        "bcc",
        "replyTo",
        "subject",
        "htmlContent",
        "textContent",
        "headers",
        "attachment",
        "tags",
        "templateId",
        "params",
        "scheduledAt",
        "batchId",
        "messageVersions",
        "email",
        "name",
        "content",
        "url",
        "id",
    ]
)
_mutated = st.builds(
    lambda base, changes: {**base, **changes},
    st.just(
        plain(
            cc=[{"email": "c@example.org", "name": "C"}],
            attachment=[{"name": "a.pdf", "content": "eA=="}],
        )
    ),
    st.dictionaries(_field_names, _json, max_size=4),
)
_bodies = st.one_of(
    _mutated.map(orjson.dumps),
    st.builds(lambda doc: orjson.dumps({"messageVersions": doc, **plain()}), _json),
    st.binary(max_size=64),
    st.text(max_size=40).map(str.encode),
)
_headers = st.dictionaries(
    st.sampled_from(["content-type", "idempotency-key", "x-mailmux-class", "x-mailmux-deadline"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
    max_size=2,
)


async def test_random_requests_never_get_a_5xx(tmp_path: Path) -> None:
    async with router(tmp_path, {"brevo": "brevo", "other": "sendgrid"}) as r:
        url = f"{r.url}{PATH}"

        def run() -> None:
            with httpx.Client(timeout=10) as http:

                @settings(
                    max_examples=150,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(body=_bodies, headers=_headers)
                def probe(body: bytes, headers: dict[str, str]) -> None:
                    sent = {"api-key": CLIENT_KEY, **headers}
                    answer = http.post(url, content=body, headers=sent)
                    assert answer.status_code < 500, (answer.status_code, answer.text, body)
                    if answer.status_code >= 400:
                        assert set(answer.json()) == {"code", "message"}

                probe()
                assert (
                    http.post(
                        url, content=orjson.dumps(plain()), headers={"api-key": CLIENT_KEY}
                    ).status_code
                    == 201
                )

        await r.call(run)
