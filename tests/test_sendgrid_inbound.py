"""SendGrid's Mail Send served by mailmux: the official SDK pointed at it, over real sockets.

Only the SDK's `host` changes. mailmux routes the SDK's request to a vendor
of another ESP (translated) or of SendGrid (passed through as it came), and
the SDK gets SendGrid's own answers and exceptions.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from python_http_client import exceptions as sg_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    Bcc,
    Category,
    Cc,
    ContentId,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Header,
    Mail,
    ReplyTo,
    To,
)
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router

from mailmux.message import DEFAULT_LIMITS
from mailmux.vendors.inbound import ShapeRequest
from mailmux.vendors.sendgrid.inbound import SendGridInbound

PDF = b"%PDF-1.4 fake"
PNG = b"\x89PNG fake"
SEND = "/v3/mail/send"


def client(url: str, key: str = CLIENT_KEY) -> SendGridAPIClient:
    return SendGridAPIClient(key, host=url)


def rich_mail() -> Mail:
    mail = Mail(
        from_email=From("sender@example.com", "Sender Name"),
        to_emails=[To("a@example.com", "Alice A"), To("b@example.com")],
        subject="Hello rich ✓",
        plain_text_content="text body",
        html_content="<p>html <img src='cid:logo1'></p>",
    )
    mail.add_cc(Cc("c@example.com", "Carol"))
    mail.add_bcc(Bcc("d@example.com"))
    mail.reply_to = ReplyTo("reply@example.com", "Reply Desk")
    mail.add_header(Header("X-Custom", "custom-value"))
    pdf, png = (base64.b64encode(data).decode() for data in (PDF, PNG))
    mail.add_attachment(
        Attachment(
            FileContent(pdf),
            FileName("doc.pdf"),
            FileType("application/pdf"),
            Disposition("attachment"),
        )
    )
    mail.add_attachment(
        Attachment(
            FileContent(png),
            FileName("logo.png"),
            FileType("image/png"),
            Disposition("inline"),
            ContentId("logo1"),
        )
    )
    mail.add_category(Category("cat1"))
    mail.add_category(Category("cat2"))
    mail.add_custom_arg(CustomArg("order_id", "42"))
    return mail


def simple(**extra: Any) -> dict[str, Any]:
    """A minimal valid Mail Send body, as a dict the SDK sends as it is."""
    body: dict[str, Any] = {
        "from": {"email": "sender@example.com"},
        "subject": "Hi",
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        "content": [{"type": "text/plain", "value": "hello"}],
    }
    body.update(extra)
    return body


def template(**extra: Any) -> dict[str, Any]:
    """A dynamic-template body with fields mailmux does not model."""
    return {
        "from": {"email": "sender@example.com", "name": "Shop"},
        "personalizations": [
            {"to": [{"email": "a@example.com"}], "dynamic_template_data": {"order": "A-1"}}
        ],
        "template_id": "d-0123456789abcdef",
        "tracking_settings": {"subscription_tracking": {"enable": True}},
        "asm": {"group_id": 42},
        **extra,
    }


def mailmux_ids(response: Any) -> list[str]:
    return response.headers["X-Mailmux-Message-Id"].split(", ")


async def settled(router: Router, message_id: str, state: str = "sent") -> dict[str, Any]:
    """The message once it reaches `state`, polling for at most 5 seconds."""
    for _ in range(200):
        found = await router.message(message_id)
        if found["state"] == state:
            return found
        await asyncio.sleep(0.025)
    raise AssertionError(f"{message_id} still {found['state']}, not {state}")


async def nothing_spooled(router: Router) -> None:
    store = router.app.store
    await store.flush()
    assert sum((await store.count_by_state()).values()) == 0


def post(url: str, body: bytes, key: str | None = CLIENT_KEY, **headers: str) -> requests.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    headers.setdefault("Content-Type", "application/json")
    return requests.post(url + SEND, data=body, headers=headers, timeout=10)


# -- (a) translated for another ESP ----------------------------------------------------


async def test_sdk_rich_message_arrives_translated_at_mailgun(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        response = await mux.call(client(mux.url).send, rich_mail())

        assert (response.status_code, response.body) == (202, b"")
        (message_id,) = mailmux_ids(response)
        assert response.headers["X-Message-Id"] == message_id
        (stored,) = await mux.received("other")
        form = stored["body"]
        assert form["from"] == "Sender Name <sender@example.com>"
        assert form["to"] == ["Alice A <a@example.com>", "b@example.com"]
        assert form["cc"] == ["Carol <c@example.com>"]
        assert form["bcc"] == ["d@example.com"]
        assert form["h:Reply-To"] == "Reply Desk <reply@example.com>"
        assert form["h:X-Custom"] == "custom-value"
        assert form["subject"] == "Hello rich ✓"
        assert (form["text"], form["html"]) == ("text body", "<p>html <img src='cid:logo1'></p>")
        assert sorted(form["o:tag"]) == ["cat1", "cat2"]
        assert form["v:order_id"] == "42"
        (pdf,) = form["attachment"]
        assert (pdf["filename"], pdf["content_type"]) == ("doc.pdf", "application/pdf")
        assert base64.b64decode(pdf["content"]) == PDF
        (logo,) = form["inline"]
        assert (logo["filename"], base64.b64decode(logo["content"])) == ("logo1", PNG)
        found = await mux.message(message_id)
        assert (found["state"], found["vendor"]) == ("sent", "other")
        (attempt,) = found["attempts"]
        assert attempt["mode"] == "translated"
        received = next(e for e in found["events"] if e["kind"] == "received")
        assert (received["ingress"], received["client"]) == ("sendgrid", CLIENT_NAME)


async def test_a_trailing_slash_on_the_sdk_host_still_reaches_mail_send(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "postmark"}) as mux:
        response = await mux.call(client(mux.url + "/").send, simple())
        assert response.status_code == 202
        (stored,) = await mux.received("other")
        assert stored["body"]["To"] == "a@example.com"


# -- (b) passed through to SendGrid ----------------------------------------------------


async def test_same_esp_passes_the_request_through_byte_for_byte(tmp_path: Path) -> None:
    async with router(tmp_path, {"same": "sendgrid"}) as mux:
        sdk = client(mux.url)
        body = template()
        response = await mux.call(sdk.send, body)

        (kept,) = mux.emulators["same"].messages
        assert kept.raw_body == json.dumps(body).encode()  # what the SDK put on the wire
        assert kept.body["tracking_settings"] == {"subscription_tracking": {"enable": True}}
        assert kept.headers["authorization"] == "Bearer …-key"  # the vendor's, not 6789
        assert response.status_code == 202
        assert response.headers["X-Message-Id"] == kept.id  # SendGrid's own answer
        (message_id,) = mailmux_ids(response)
        found = await mux.message(message_id)
        assert found["vendor_message_id"] == kept.id
        (attempt,) = found["attempts"]
        assert attempt["mode"] == "passed_through"


# -- (c) exclusive fields stay with SendGrid -------------------------------------------


async def test_exclusive_fields_go_only_to_sendgrid_and_wait_for_it(tmp_path: Path) -> None:
    async with router(tmp_path, {"same": "sendgrid", "other": "mailgun"}) as mux:
        await mux.faults("same", {"status": 503})
        response = await mux.call(client(mux.url).send, template())

        assert response.status_code == 202  # queued: a success, as SendGrid's own 202
        (message_id,) = mailmux_ids(response)
        assert response.headers["X-Message-Id"] == message_id
        queued = await mux.message(message_id)
        assert queued["state"] == "queued"
        assert {a["vendor"] for a in queued["attempts"]} == {"same"}

        await mux.faults("same", {})
        found = await settled(mux, message_id)
        assert found["vendor"] == "same"
        assert len(mux.emulators["same"].messages) == 1
        assert await mux.received("other") == []


async def test_a_sandbox_request_never_becomes_mail_at_another_esp(tmp_path: Path) -> None:
    body = simple(mail_settings={"sandbox_mode": {"enable": True}})
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        with pytest.raises(sg_errors.BadRequestsError) as raised:
            await mux.call(client(mux.url).send, body)
        (error,) = raised.value.to_dict["errors"]
        assert "mail_settings.sandbox_mode" in error["message"]
        assert await mux.received("other") == []


async def test_tracking_flags_are_dropped_when_translating(tmp_path: Path) -> None:
    body = simple(
        tracking_settings={"click_tracking": {"enable": True}, "open_tracking": {"enable": True}},
        mail_settings={"sandbox_mode": {"enable": False}, "footer": {"enable": False}},
    )
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        response = await mux.call(client(mux.url).send, body)
        assert response.status_code == 202
        (stored,) = await mux.received("other")
        assert stored["body"]["to"] == ["a@example.com"]


@pytest.mark.parametrize(
    ("extra", "exclusive"),
    [
        ({}, ()),
        ({"template_id": "d-1"}, ("template_id",)),
        (
            {"send_at": 1_900_000_000, "batch_id": "b", "ip_pool_name": "p"},
            ("send_at", "batch_id", "ip_pool_name"),
        ),
        ({"asm": {"group_id": 1}, "sections": {"s": "t"}}, ("asm", "sections")),
        ({"mail_settings": {"sandbox_mode": {"enable": True}}}, ("mail_settings.sandbox_mode",)),
        (
            {"mail_settings": {"bypass_list_management": {"enable": True}}},
            ("mail_settings.bypass_list_management",),
        ),
        ({"mail_settings": {"spam_check": {"enable": True}, "footer": {"enable": False}}}, ()),
        (
            {"tracking_settings": {"ganalytics": {"enable": True}}},
            ("tracking_settings.ganalytics",),
        ),
        ({"tracking_settings": {"click_tracking": {"enable": True}}}, ()),
        (
            {
                "content": [
                    {"type": "text/plain", "value": "t"},
                    {"type": "text/x-amp-html", "value": "a"},
                ]
            },
            ("content.text/x-amp-html",),
        ),
        (
            {
                "personalizations": [
                    {"to": [{"email": "a@example.com"}], "substitutions": {"-n-": "x"}}
                ]
            },
            ("personalizations.substitutions",),
        ),
        ({"future_field": True}, ("future_field",)),
    ],
)
def test_what_only_sendgrid_can_carry_is_named(
    extra: dict[str, Any], exclusive: tuple[str, ...]
) -> None:
    shape = SendGridInbound()
    body = orjson.dumps(simple(**extra))
    request = ShapeRequest("send", "POST", SEND, "", {}, {"Content-Type": "application/json"}, body)
    (message,) = shape.parse(request, now=0.0, limits=DEFAULT_LIMITS)
    assert message.original is not None
    assert message.original.exclusive == exclusive
    assert message.original.body is body  # one personalization: the request as it came


# -- (d) several personalizations ------------------------------------------------------


async def test_each_personalization_is_its_own_message(tmp_path: Path) -> None:
    mail = Mail(
        from_email="sender@example.com",
        to_emails=[To("a@example.com"), To("b@example.com")],
        subject="One each",
        plain_text_content="hello",
        is_multiple=True,
    )
    async with router(tmp_path, {"other": "postmark"}) as mux:
        response = await mux.call(client(mux.url).send, mail)

        assert response.status_code == 202
        ids = mailmux_ids(response)
        assert len(ids) == 2
        assert response.headers["X-Message-Id"] == ids[0]
        received = await mux.received("other")
        assert sorted(m["body"]["To"] for m in received) == ["a@example.com", "b@example.com"]


async def test_several_personalizations_pass_through_narrowed(tmp_path: Path) -> None:
    body = template()
    body["personalizations"].append(
        {"to": [{"email": "b@example.com"}], "dynamic_template_data": {"order": "B-2"}}
    )
    async with router(tmp_path, {"same": "sendgrid"}) as mux:
        response = await mux.call(client(mux.url).send, body)

        assert response.status_code == 202
        ids = mailmux_ids(response)
        assert response.headers["X-Message-Id"] == ids[0]
        kept = sorted(mux.emulators["same"].messages, key=lambda m: str(m.body))
        assert [m.body["personalizations"] for m in kept] == [[p] for p in body["personalizations"]]
        assert all(m.body["template_id"] == body["template_id"] for m in kept)


# -- (e) errors through the SDK --------------------------------------------------------


async def test_a_bad_request_raises_bad_requests_error(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        body = simple()
        del body["content"]
        body["personalizations"][0]["to"] = [{"email": "not an address"}]
        with pytest.raises(sg_errors.BadRequestsError) as raised:
            await mux.call(client(mux.url).send, body)

        errors = raised.value.to_dict["errors"]
        assert [e["field"] for e in errors] == ["personalizations.0.to.0.email", "content"]
        assert errors[0]["message"] == "Does not contain a valid address."
        assert errors[1]["message"].startswith("Unless a valid template_id is provided")
        assert errors[1]["help"].endswith("errors.html#message.content")
        assert await mux.received("other") == []


@pytest.mark.parametrize("key", ["SG.unknown", None])
async def test_an_unknown_key_raises_unauthorized_error(tmp_path: Path, key: str | None) -> None:
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        with pytest.raises(sg_errors.UnauthorizedError) as raised:
            await mux.call(
                SendGridAPIClient(key, host=mux.url).send, simple()
            )  # None: "Bearer None"

        (error,) = raised.value.to_dict["errors"]
        assert error == {
            "message": "The provided authorization grant is invalid, expired, or revoked",
            "field": None,
            "help": None,
        }
        assert await mux.received("other") == []


async def test_no_authorization_header_is_401(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        answer = await mux.call(post, mux.url, orjson.dumps(simple()), None)
        assert answer.status_code == 401
        assert answer.json()["errors"][0]["message"].startswith("authorization required")


async def test_every_vendor_refusing_raises_bad_requests_error(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        await mux.faults("other", {"status": 400})
        with pytest.raises(sg_errors.BadRequestsError) as raised:
            await mux.call(client(mux.url).send, simple())
        (error,) = raised.value.to_dict["errors"]
        assert "emulated fault" in error["message"].lower()


# -- (f) hostile inputs ----------------------------------------------------------------


def _hostile() -> dict[str, tuple[bytes, str | None]]:
    """name → (body, the field SendGrid's error names)."""
    cases: dict[str, tuple[Any, str | None]] = {
        "invalid json": (b'{"from": ', None),
        "not an object": (b"[1, 2]", None),
        "missing from": ({k: v for k, v in simple().items() if k != "from"}, "from.email"),
        "bad address": (simple(**{"from": {"email": "nobody@"}}), "from.email"),
        "crlf in header name": (simple(headers={"X-A\r\nBcc": "x"}), "headers.'X-A\\r\\nBcc'"),
        "crlf in header value": (simple(headers={"X-A": "x\r\nBcc: e@example.com"}), "headers.X-A"),
        "crlf in subject": (simple(subject="Hi\r\nBcc: e@example.com"), "subject"),
        "crlf in a display name": (
            simple(**{"from": {"email": "sender@example.com", "name": "Eve\r\nBcc: e@x.com"}}),
            "from.name",
        ),
        "lf in a recipient name": (
            simple(personalizations=[{"to": [{"email": "a@example.com", "name": "A\nB"}]}]),
            "personalizations.0.to.0.name",
        ),
        "duplicate recipient": (
            simple(
                personalizations=[
                    {"to": [{"email": "a@example.com"}], "cc": [{"email": "A@example.com"}]}
                ]
            ),
            "personalizations.0",
        ),
        "reserved header": (simple(headers={"Reply-To": "x@example.com"}), "headers.Reply-To"),
    }
    return {
        name: (body if isinstance(body, bytes) else orjson.dumps(body), field)
        for name, (body, field) in cases.items()
    }


HOSTILE = _hostile()


async def test_hostile_requests_get_sendgrid_400s_and_nothing_is_sent(tmp_path: Path) -> None:
    async with router(tmp_path, {"same": "sendgrid", "other": "mailgun"}) as mux:
        for name, (body, field) in HOSTILE.items():
            answer = await mux.call(post, mux.url, body)
            assert answer.status_code == 400, name
            errors = answer.json()["errors"]
            assert errors and all(e.keys() == {"message", "field", "help"} for e in errors), name
            assert errors[0]["field"] == field, (name, errors)
        assert await mux.received("same") == await mux.received("other") == []
        await nothing_spooled(mux)


async def test_invalid_json_is_sendgrids_bare_bad_request(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        answer = await mux.call(post, mux.url, b"[object Object]")
        assert answer.json() == {
            "errors": [{"message": "Bad Request", "field": None, "help": None}]
        }


async def test_an_oversize_body_is_413(tmp_path: Path) -> None:
    limits = {"max_request_bytes": 2048, "max_message_bytes": 1024, "max_attachment_bytes": 1024}
    async with router(tmp_path, {"other": "mailgun"}, limits=limits) as mux:
        body = simple(content=[{"type": "text/plain", "value": "x" * 4096}])
        with pytest.raises(sg_errors.PayloadTooLargeError) as raised:
            await mux.call(client(mux.url).send, body)
        (error,) = raised.value.to_dict["errors"]
        assert "too large" in error["message"]
        assert await mux.received("other") == []
        await nothing_spooled(mux)


# -- (g) Idempotency-Key ---------------------------------------------------------------


async def test_idempotency_key_replays_and_refuses_another_body(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "mailgun"}) as mux:
        sdk = client(mux.url)
        send: Callable[..., Any] = sdk.client.mail.send.post
        key = {"Idempotency-Key": "order-42"}
        first = await mux.call(send, request_body=simple(), request_headers=key)
        again = await mux.call(send, request_body=simple(), request_headers=key)

        assert first.status_code == again.status_code == 202
        assert first.headers["X-Message-Id"] == again.headers["X-Message-Id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(await mux.received("other")) == 1

        with pytest.raises(sg_errors.HTTPError) as raised:
            await mux.call(send, request_body=simple(subject="Other"), request_headers=key)
        assert raised.value.status_code == 422
        assert "Idempotency-Key" in raised.value.to_dict["errors"][0]["message"]
        assert len(await mux.received("other")) == 1


# -- (h) property: no 5xx, no crash ----------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["a@example.com", "x\r\nBcc: e@example.com", "text/html", "inline", ""])
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)


def _rich_body() -> dict[str, Any]:
    body: dict[str, Any] = rich_mail().get()
    body["personalizations"][0].update(subject="Own", headers={"X-P": "1"}, custom_args={"k": "v"})
    body["personalizations"].append({"to": [{"email": "z@example.com"}]})
    body["mail_settings"] = {"sandbox_mode": {"enable": False}}
    return body


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `doc` a mutation can hit: each key and index, at any depth."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, (*prefix, index))
    return found


_BASES = [simple(), template(), _rich_body()]
_PLACES = [(i, path) for i, base in enumerate(_BASES) for path in _paths(base) if path]


def _mutate(place: tuple[int, tuple[Any, ...]], value: Any, delete: bool) -> bytes:
    """A valid body with one value replaced (or removed), anywhere in it."""
    index, path = place
    body = orjson.loads(orjson.dumps(_BASES[index]))
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return json.dumps(body).encode()  # json, not orjson: big ints and Infinity go through


_bodies = st.one_of(
    st.binary(max_size=120),
    _json.map(lambda doc: json.dumps(doc).encode()),
    st.sampled_from(_BASES).map(lambda doc: json.dumps(doc).encode()),
    st.builds(_mutate, st.sampled_from(_PLACES), _json, st.booleans()),
    st.builds(_mutate, st.sampled_from(_PLACES), _json, st.booleans()),
    st.builds(_mutate, st.sampled_from(_PLACES), _json, st.booleans()),
)
#: Header values the HTTP server itself lets through (it refuses control characters).
_printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8)
_headers = st.fixed_dictionaries(
    {
        "Authorization": st.sampled_from(
            [f"Bearer {CLIENT_KEY}"] * 12 + ["Bearer", "Bearer x", "Basic abc", ""]
        )
    },
    optional={
        "Content-Type": st.sampled_from(["text/plain", "application/json; charset=utf-8"]),
        "Idempotency-Key": st.sampled_from(["k1", "k2", ""]) | _printable,
        "X-Mailmux-Class": st.sampled_from(["bulk", "Bulk!"]),
        "X-Mailmux-Deadline": st.sampled_from(["30", "-1", "2000-01-01T00:00:00Z", "soon"]),
    },
)


async def test_no_body_or_header_makes_mailmux_answer_5xx(tmp_path: Path) -> None:
    async with router(tmp_path, {"same": "sendgrid", "other": "mailgun"}) as mux:
        url = mux.url + SEND
        http = requests.Session()

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=_bodies, headers=_headers)
        def run(body: bytes, headers: dict[str, str]) -> None:
            headers = {
                k: v.encode("latin-1", "replace").decode("latin-1") for k, v in headers.items()
            }
            answer = http.post(url, data=body, headers=headers, timeout=10)
            assert answer.status_code < 500, (answer.status_code, answer.text)
            if answer.status_code >= 400:
                assert "errors" in answer.json()

        await mux.call(run)
        assert (await mux.call(post, mux.url, orjson.dumps(simple()))).status_code == 202
