"""mailmux's Mailjet v3.1 ingress, driven by the official `mailjet-rest` SDK over real sockets.

The SDK changes only its base URL (`api_url`); mailmux routes what it sends to
emulated vendors of Mailjet (passed through) or of another ESP (translated).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mailjet_rest
import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailjet_rest.utils.guardrails import SecurityGuard
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router

from mailmux.vendors.inbound import Failure
from mailmux.vendors.mailjet import replies
from mailmux.vendors.mailjet.sdk_key import made_by_sdk

PNG = b"\x89PNG\r\n\x1a\nfake"
AUTH = "Basic " + base64.b64encode(f"{CLIENT_NAME}:{CLIENT_KEY}".encode()).decode()


def rich() -> dict[str, Any]:
    """One message with every field Mailjet has that a normalized message carries."""
    return {
        "Messages": [
            {
                "From": {"Email": "shop@example.com", "Name": "Zoë's Shop"},
                "To": [
                    {"Email": "ana@example.org", "Name": "Ana María"},
                    {"Email": "bo@example.net"},
                ],
                "Cc": [{"Email": "chen@example.com", "Name": "陈伟"}],
                "Bcc": [{"Email": "audit@example.com"}],
                "ReplyTo": {"Email": "support@example.com", "Name": "Support"},
                "Subject": "Your receipt — №42 ✓",
                "TextPart": "Thanks for your order.",
                "HTMLPart": '<p>Thanks! <img src="cid:logo1"></p>',
                "Headers": {"X-Order": "42"},
                "Attachments": [
                    {
                        "ContentType": "text/plain",
                        "Filename": "receipt.txt",
                        "Base64Content": base64.b64encode(b"total: 42").decode(),
                    }
                ],
                "InlinedAttachments": [
                    {
                        "ContentType": "image/png",
                        "Filename": "logo.png",
                        "ContentID": "logo1",
                        "Base64Content": base64.b64encode(PNG).decode(),
                    }
                ],
                "CustomCampaign": "receipts",
                "CustomID": "order-42",
                "EventPayload": '{"order_id": "42"}',
                "TrackOpens": "disabled",
            }
        ]
    }


def simple(**fields: Any) -> dict[str, Any]:
    message = {
        "From": {"Email": "shop@example.com"},
        "To": [{"Email": "ana@example.org"}],
        "Subject": "Hi",
        "TextPart": "Hello",
        **fields,
    }
    return {"Messages": [message]}


def client(mux: Router, key: str = CLIENT_KEY) -> mailjet_rest.Client:
    """The SDK as a service configures it, only the base URL pointing at mailmux."""
    return mailjet_rest.Client(auth=(CLIENT_NAME, key), version="v3.1", api_url=mux.url + "/")


def send(mux: Router, payload: Any, **options: Any) -> Callable[[], requests.Response]:
    def call() -> requests.Response:
        with client(mux, options.pop("key", CLIENT_KEY)) as sdk:
            return sdk.send.create(data=payload, **options)

    return call


async def post(mux: Router, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """A hand-made request: (status, decoded JSON answer)."""
    sent = {"Authorization": AUTH, "Content-Type": "application/json", **(headers or {})}

    def call() -> requests.Response:
        return requests.post(f"{mux.url}/v3.1/send", data=body, headers=sent, timeout=10)

    answer = await mux.call(call)
    return answer.status_code, answer.json()


async def spooled(mux: Router) -> int:
    return sum((await mux.app.store.count_by_state()).values())


async def until(check: Callable[[], Any], what: str) -> None:
    """Poll `check` (an async callable returning truthy) for up to 5 s."""
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


# -- (a) the SDK's rich message, translated for another ESP ---------------------------------


async def test_a_rich_message_from_the_sdk_arrives_translated_at_sendgrid(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        response = await mux.call(send(mux, rich()))

        assert response.status_code == 200
        message_id = response.headers["X-Mailmux-Message-Id"]
        (entry,) = response.json()["Messages"]
        assert (entry["Status"], entry["CustomID"]) == ("success", "order-42")
        recipients = entry["To"] + entry["Cc"] + entry["Bcc"]
        assert [r["Email"] for r in recipients] == [
            "ana@example.org",
            "bo@example.net",
            "chen@example.com",
            "audit@example.com",
        ]
        assert {r["MessageUUID"] for r in recipients} == {message_id}
        numbers = [r["MessageID"] for r in recipients]
        assert all(isinstance(n, int) and 0 < n < 2**53 for n in numbers)
        assert len(set(numbers)) == 4
        assert entry["To"][0]["MessageHref"] == f"/v1/messages/{message_id}"

        (stored,) = await mux.received("other")
        body = stored["body"]
        (personalization,) = body["personalizations"]
        assert personalization["to"] == [
            {"email": "ana@example.org", "name": "Ana María"},
            {"email": "bo@example.net"},
        ]
        assert personalization["cc"] == [{"email": "chen@example.com", "name": "陈伟"}]
        assert personalization["bcc"] == [{"email": "audit@example.com"}]
        assert personalization["custom_args"] == {"order_id": "42", "CustomID": "order-42"}
        assert body["from"] == {"email": "shop@example.com", "name": "Zoë's Shop"}
        assert body["reply_to"] == {"email": "support@example.com", "name": "Support"}
        assert body["subject"] == "Your receipt — №42 ✓"
        assert body["content"] == [
            {"type": "text/plain", "value": "Thanks for your order."},
            {"type": "text/html", "value": '<p>Thanks! <img src="cid:logo1"></p>'},
        ]
        assert body["headers"] == {"X-Order": "42"}
        assert body["categories"] == ["receipts"]
        regular, inline = body["attachments"]
        assert (regular["filename"], regular["type"], regular["disposition"]) == (
            "receipt.txt",
            "text/plain",
            "attachment",
        )
        assert base64.b64decode(regular["content"]) == b"total: 42"
        assert (inline["filename"], inline["disposition"], inline["content_id"]) == (
            "logo.png",
            "inline",
            "logo1",
        )
        assert base64.b64decode(inline["content"]) == PNG
        assert "TrackOpens" not in orjson.dumps(body).decode()  # dropped, not smuggled

        found = await mux.message(message_id)
        assert found["state"] == "sent"
        assert found["vendor_message_id"] == stored["id"]
        received = next(e for e in found["events"] if e["kind"] == "received")
        assert (received["ingress"], received["client"]) == ("mailjet", CLIENT_NAME)
        assert [a["mode"] for a in found["attempts"]] == ["translated"]


# -- (b) pass-through to a Mailjet vendor ---------------------------------------------------


async def test_a_mailjet_vendor_gets_the_request_unchanged_with_its_own_key(
    tmp_path: Path,
) -> None:
    payload = rich()
    payload["Messages"][0]["Priority"] = 2  # mailmux models no priority
    payload["AdvanceErrorHandling"] = True
    async with router(tmp_path, {"mj": "mailjet"}) as mux:
        response = await mux.call(send(mux, payload))

        (stored,) = mux.emulators["mj"].messages
        assert stored.raw_body == json.dumps(payload).encode()  # what the SDK put on the wire
        assert stored.headers["authorization"] == "…-key"  # the vendor's key, mj-vendor-key
        message_id = response.headers["X-Mailmux-Message-Id"]
        assert stored.headers["idempotency-key"] == message_id
        assert response.status_code == 200
        (entry,) = response.json()["Messages"]
        assert entry["To"][0]["MessageUUID"] == stored.id  # Mailjet's own answer
        assert entry["CustomID"] == "order-42"
        found = await mux.message(message_id)
        assert [a["mode"] for a in found["attempts"]] == ["passed_through"]
        assert found["vendor_message_id"] == stored.id


# -- (c) a property only Mailjet has ---------------------------------------------------------


async def test_an_exclusive_property_waits_for_mailjet_and_is_sent_once(tmp_path: Path) -> None:
    payload = simple(URLTags="utm_source=newsletter")
    async with router(tmp_path, {"mj": "mailjet", "sg": "sendgrid"}) as mux:
        await mux.faults("mj", {"status": 503})

        response = await mux.call(send(mux, payload))

        assert response.status_code == 200  # queued is a success
        (entry,) = response.json()["Messages"]
        assert entry["Status"] == "success"
        message_id = response.headers["X-Mailmux-Message-Id"]
        assert entry["To"][0]["MessageUUID"] == message_id
        assert (await mux.message(message_id))["state"] == "queued"
        assert await mux.received("sg") == []

        await mux.faults("mj", {})

        async def sent() -> bool:
            return bool((await mux.message(message_id))["state"] == "sent")

        await until(sent, "the queued message to be sent")
        (stored,) = await mux.received("mj")
        assert stored["body"] == payload
        assert await mux.received("sg") == []
        found = await mux.message(message_id)
        assert {a["vendor"] for a in found["attempts"]} == {"mj"}


async def test_sandbox_mode_is_never_translated_into_real_mail(tmp_path: Path) -> None:
    payload = {**simple(), "SandboxMode": True}
    async with router(tmp_path, {"mj": "mailjet", "sg": "sendgrid"}) as mux:
        response = await mux.call(send(mux, payload))

        assert response.status_code == 200
        (recipient,) = response.json()["Messages"][0]["To"]
        assert (recipient["MessageUUID"], recipient["MessageID"]) == ("", 0)  # Mailjet's answer
        assert await mux.received("sg") == []
        assert await mux.received("mj") == []  # validated, not delivered


async def test_sandbox_mode_without_a_mailjet_vendor_is_refused_not_sent(tmp_path: Path) -> None:
    async with router(tmp_path, {"sg": "sendgrid"}) as mux:
        with pytest.raises(mailjet_rest.ValidationError) as raised:
            await mux.call(send(mux, {**simple(), "SandboxMode": True}))

        ((entry),) = orjson.loads(raised.value.response_body)["Messages"]
        ((error),) = entry["Errors"]
        assert error["ErrorCode"] == "mailmux-rejected"
        assert "SandboxMode" in error["ErrorMessage"]
        assert await mux.received("sg") == []


# -- (d) several messages in one request ------------------------------------------------------


async def test_each_message_of_a_batch_is_its_own_message_and_answered_in_order(
    tmp_path: Path,
) -> None:
    payload = {
        "Globals": {"From": {"Email": "shop@example.com"}, "Subject": "News", "TextPart": "Hi"},
        "Messages": [
            {"To": [{"Email": "ana@example.org"}], "CustomID": "a"},
            {"To": [{"Email": "bo@example.net"}], "CustomID": "b", "TextPart": "Hi Bo"},
        ],
    }
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        response = await mux.call(send(mux, payload))

        assert response.status_code == 200
        ids = response.headers["X-Mailmux-Message-Id"].split(", ")
        first, second = response.json()["Messages"]
        assert (first["CustomID"], second["CustomID"]) == ("a", "b")
        assert [first["To"][0]["MessageUUID"], second["To"][0]["MessageUUID"]] == ids
        stored = sorted(
            await mux.received("other"), key=lambda s: str(s["body"]["personalizations"][0]["to"])
        )
        assert [s["body"]["content"][0]["value"] for s in stored] == ["Hi", "Hi Bo"]
        assert {s["body"]["from"]["email"] for s in stored} == {"shop@example.com"}


async def test_a_mailjet_vendor_gets_each_message_of_a_batch_alone(tmp_path: Path) -> None:
    payload = {
        "Globals": {"From": {"Email": "shop@example.com"}, "TextPart": "Hi", "URLTags": "a=b"},
        "Messages": [{"To": [{"Email": "ana@example.org"}]}, {"To": [{"Email": "bo@example.net"}]}],
    }
    async with router(tmp_path, {"mj": "mailjet"}) as mux:
        response = await mux.call(send(mux, payload))

        assert response.status_code == 200
        bodies = sorted((s["body"] for s in await mux.received("mj")), key=str)
        assert bodies == [
            {"Globals": payload["Globals"], "Messages": [m]} for m in payload["Messages"]
        ]


async def test_one_invalid_message_refuses_the_batch_with_an_entry_per_message(
    tmp_path: Path,
) -> None:
    payload = simple()
    payload["Messages"].append({**payload["Messages"][0], "To": [{"Email": "bad@"}]})
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        with pytest.raises(mailjet_rest.ValidationError) as raised:
            await mux.call(send(mux, payload))

        assert raised.value.status_code == 400
        valid, invalid = orjson.loads(raised.value.response_body)["Messages"]
        assert [e["ErrorCode"] for e in valid["Errors"]] == ["mailmux-not-sent"]
        ((error),) = invalid["Errors"]
        assert (error["ErrorCode"], error["ErrorRelatedTo"]) == ("mj-0013", ["To[0].Email"])
        assert await mux.received("other") == []
        assert await spooled(mux) == 0


async def test_a_message_every_vendor_refuses_gets_a_per_message_error(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        await mux.faults("other", {"status": 400})

        with pytest.raises(mailjet_rest.ValidationError) as raised:
            await mux.call(send(mux, simple()))

        ((entry),) = orjson.loads(raised.value.response_body)["Messages"]
        assert entry["Status"] == "error"
        assert [e["ErrorCode"] for e in entry["Errors"]] == ["mailmux-rejected"]


# -- (e) errors through the SDK ----------------------------------------------------------------


async def test_a_bad_request_raises_the_sdks_validation_error(tmp_path: Path) -> None:
    payload = simple()
    del payload["Messages"][0]["From"]
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        with pytest.raises(mailjet_rest.ValidationError, match="From is mandatory"):
            await mux.call(send(mux, payload))
        assert await mux.received("other") == []


async def test_an_unknown_client_key_raises_the_sdks_auth_error(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        with pytest.raises(mailjet_rest.MailjetAuthError) as raised:
            await mux.call(send(mux, simple(), key="not-a-client-key"))

        assert raised.value.status_code == 401
        assert orjson.loads(raised.value.response_body)["ErrorCode"] == "mj-0015"
        assert CLIENT_KEY not in raised.value.response_body
        assert "vendor" not in raised.value.response_body
        status, answer = await post(mux, orjson.dumps(simple()), {"Authorization": ""})
        assert (status, answer["StatusCode"]) == (401, 401)
        assert await mux.received("other") == []


async def test_a_bearer_key_is_a_client_key(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        status, answer = await post(
            mux, orjson.dumps(simple()), {"Authorization": f"Bearer {CLIENT_KEY}"}
        )
        assert (status, answer["Messages"][0]["Status"]) == (200, "success")


@pytest.mark.parametrize("failure", list(Failure))
def test_every_failure_has_a_mailjet_answer_the_sdk_raises_on(failure: Failure) -> None:
    reply = replies.failure(failure, "why")
    body = orjson.loads(reply.body)
    expected = {Failure.UNAUTHORIZED: 401, Failure.FORBIDDEN: 401, Failure.UNAVAILABLE: 503}
    assert reply.status == {**expected, Failure.IDEMPOTENCY_IN_FLIGHT: 429}.get(failure, 400)
    assert (body["StatusCode"], len(body["ErrorIdentifier"])) == (reply.status, 36)
    assert body["ErrorCode"] and body["ErrorMessage"]
    if failure is Failure.IDEMPOTENCY_IN_FLIGHT:
        assert reply.headers["Retry-After"] == "1"


# -- (f) hostile inputs --------------------------------------------------------------------------


def _with(change: Callable[[dict[str, Any]], None]) -> bytes:
    payload = simple()
    change(payload["Messages"][0])
    return orjson.dumps(payload)


HOSTILE = {
    "invalid-json": (b'{"Messages": [', None, "mj-0002"),
    "not-an-object": (b"[1, 2]", None, "mj-0004"),
    "no-messages": (b"{}", None, "mj-0003"),
    "missing-to": (_with(lambda m: m.pop("To")), "To", "mj-0003"),
    "bad-address": (_with(lambda m: m.update(To=[{"Email": "a@@b"}])), "To[0].Email", "mj-0013"),
    "crlf-header-name": (
        _with(lambda m: m.update(Headers={"X-A\r\nBcc: x@evil.example": "v"})),
        "Headers.'X-A\\r\\nBcc: x@evil.example'",
        "mj-0005",
    ),
    "crlf-header-value": (
        _with(lambda m: m.update(Headers={"X-A": "v\r\nBcc: x@evil.example"})),
        "Headers.X-A",
        "mj-0005",
    ),
    "crlf-subject": (
        _with(lambda m: m.update(Subject="Hi\r\nBcc: x@evil.example")),
        "Subject",
        "mj-0005",
    ),
    "crlf-display-name": (
        _with(lambda m: m.update(From={"Email": "shop@example.com", "Name": "A\nBcc: x@e.x"})),
        "From.Name",
        "mj-0005",
    ),
    "reserved-header": (_with(lambda m: m.update(Headers={"X-MJ-Foo": "1"})), None, "send-0011"),
}


@pytest.mark.parametrize(("body", "related", "code"), HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_input_gets_mailjets_400_and_nothing_is_sent(
    tmp_path: Path, body: bytes, related: str | None, code: str
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        status, answer = await post(mux, body)

        assert status == 400
        if "Messages" in answer:  # a message's problem: per-message errors
            ((entry),) = answer["Messages"]
            error = entry["Errors"][0]
            assert entry["Status"] == "error"
            if related is not None:
                assert error["ErrorRelatedTo"] == [related]
        else:  # the call's problem: Mailjet's global error
            error = answer
            assert related is None
        assert (error["ErrorCode"], error["StatusCode"]) == (code, 400)
        assert await mux.received("other") == []
        assert await spooled(mux) == 0


async def test_an_oversize_body_is_mailjets_payload_too_large(tmp_path: Path) -> None:
    limits = {"max_request_bytes": 4000, "max_message_bytes": 4000}
    async with router(tmp_path, {"other": "sendgrid"}, limits=limits) as mux:
        status, answer = await post(mux, _with(lambda m: m.update(TextPart="x" * 5000)))

        assert (status, answer["ErrorCode"]) == (400, "mj-0011")
        assert await mux.received("other") == []
        assert await spooled(mux) == 0


# -- (g) Idempotency-Key ---------------------------------------------------------------------------


async def test_the_callers_idempotency_key_sends_once_and_replays_the_answer(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        key = {"Idempotency-Key": "order-42-receipt"}
        first = await mux.call(send(mux, simple(), headers=key))
        again = await mux.call(send(mux, simple(), headers=key))

        assert (first.status_code, again.status_code) == (200, 200)
        assert first.json() == again.json()
        assert len(await mux.received("other")) == 1
        with pytest.raises(mailjet_rest.ValidationError, match="Idempotency-Key"):
            await mux.call(send(mux, simple(Subject="Other"), headers=key))
        assert len(await mux.received("other")) == 1


async def test_the_key_the_sdk_makes_up_does_not_drop_a_repeated_send(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        twice = [await mux.call(send(mux, simple(CustomID=c))) for c in ("a", "a", "b")]

        assert [r.status_code for r in twice] == [200, 200, 200]
        ids = {r.headers["X-Mailmux-Message-Id"] for r in twice}
        assert len(ids) == 3
        assert len(await mux.received("other")) == 3


def test_the_sdks_fingerprint_is_recognised_and_nothing_else() -> None:
    for payload in (rich(), simple(CustomID="x", SandboxMode=True), {"Messages": [{"n": 1.5}]}):
        wire = json.dumps(payload).encode()
        key = SecurityGuard.generate_payload_fingerprint(payload)
        assert made_by_sdk(key, wire)
        assert not made_by_sdk(key, json.dumps({**payload, "Extra": 1}).encode())
    assert not made_by_sdk("order-42", wire)
    assert not made_by_sdk("0" * 64, b"{not json")


# -- (h) whatever arrives, no 5xx ------------------------------------------------------------------

_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_fields = st.sampled_from(
    [
        *("From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "TextPart", "HTMLPart", "Headers"),
        *("Attachments", "InlinedAttachments", "CustomCampaign", "CustomID", "EventPayload"),
        *("TemplateID", "TrackOpens", "Priority", "Email", "Name", "Base64Content", "ContentID"),
    ]
)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*at, index))


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """The rich request with a few values replaced by random JSON, keys added or removed."""
    payload = copy.deepcopy(rich())
    for _ in range(draw(st.integers(0, 4))):
        paths = [p for p in _paths(payload) for _ in range(len(p))]  # deep ones more often
        if not paths:  # everything deleted
            break
        path = draw(st.sampled_from(paths))
        parent = payload
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(_fields)] = draw(_json | st.text(alphabet="\r\n\x00a<>@:", max_size=6))
        else:
            parent[path[-1]] = draw(_json)
    return json.dumps(payload).encode()  # json, not orjson: integers past 64 bits too


_bodies = (
    _mutated()
    | _mutated()
    | _mutated()
    | _json.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
)
_authorization = st.sampled_from(
    [AUTH] * 6 + [f"Bearer {CLIENT_KEY}", "", "Basic", "Basic !!", "Bearer ", "Basic " + "e" * 7]
)


async def test_no_input_makes_mailmux_fail_or_crash(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as mux:
        url = f"{mux.url}/v3.1/send"

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(body=_bodies, authorization=_authorization, key=st.none() | st.text(max_size=4))
        def run(body: bytes, authorization: str, key: str | None) -> None:
            headers = {"Authorization": authorization, "Content-Type": "application/json"}
            if key is not None and key.isascii() and key.isprintable():
                headers["Idempotency-Key"] = key
            answer = requests.post(url, data=body, headers=headers, timeout=10)
            assert answer.status_code < 500, answer.text
            assert isinstance(answer.json(), dict)

        await mux.call(run)
        status, _ = await post(mux, orjson.dumps(simple()))
        assert status == 200  # still serving
