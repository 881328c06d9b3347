"""The SparkPost shape of the ingress: the official SDK (python-sparkpost) pointed at mailmux.

Everything goes over real sockets on 127.0.0.1: mailmux in front of one emulator
per vendor (`shaped_kit.router`). The SDK builds `https://` URLs from its `base_uri`
option, so each test sets `transmissions.base_uri` after construction, which is the
SDK's one place for the address of the Transmissions API.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router
from vendor_kit import PDF, PNG

from mailmux.vendors.inbound import ItemResult
from mailmux.vendors.sparkpost.replies import results_reply

sparkpost = pytest.importorskip("sparkpost", reason="the sparkpost SDK is not installed")
from sparkpost.exceptions import SparkPostAPIException  # noqa: E402

PATH = "/api/v1/transmissions"
MINIMAL: dict[str, Any] = {
    "recipients": [{"address": {"email": "ann@example.com"}}],
    "content": {"from": {"email": "shop@example.com"}, "subject": "Hi", "text": "hello"},
}


def with_content(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL, "content": {**MINIMAL["content"], **changes}}


def client(base: Router, key: str = CLIENT_KEY) -> Any:
    sp = sparkpost.SparkPost(key)
    sp.transmissions.base_uri = base.url + "/api/v1"  # the SDK itself would force https
    return sp


def post(base: Router, body: bytes | dict[str, Any], **headers: str) -> requests.Response:
    """A raw request to the shape (blocking: call it through `router.call`)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"Authorization": CLIENT_KEY, "Content-Type": "application/json", **headers}
    return requests.post(base.url + PATH, data=data, headers=sent, timeout=10)


async def eventually(check: Callable[[], Any], seconds: float = 10.0) -> None:
    """Poll an async check until it holds, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


async def nothing_anywhere(base: Router) -> None:
    for name in base.emulators:
        assert await base.received(name) == []
    assert not any((await base.app.store.count_by_state()).values())


# -- (a) translated to another ESP ---------------------------------------------------


async def test_a_rich_sdk_message_arrives_translated_at_sendgrid(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as base:
        sp = client(base)
        answer = await base.call(
            sp.transmissions.send,
            recipients=[
                {"address": {"email": "ann@example.com", "name": "Ann Lee"}, "tags": ["receipt"]}
            ],
            cc=["Cee Ray <cee@example.com>"],
            bcc=["audit@example.com"],
            from_email="Zoë Shop <shop@example.com>",
            reply_to="Help Desk <help@example.com>",
            subject="Order 7",
            text="thanks",
            html='<p>thanks <img src="cid:logo"></p>',
            custom_headers={"X-Order": "7"},
            attachments=[{"type": "application/pdf", "name": "r.pdf", "data": b64(PDF)}],
            inline_images=[{"type": "image/png", "name": "logo", "data": b64(PNG)}],
            metadata={"order": "7", "n": 3},
            campaign="spring",
            track_opens=False,
            track_clicks=False,
            transactional=True,
            description="not modelled, and dropped",
        )
        message_id = answer["id"]
        assert answer == {
            "total_rejected_recipients": 0,
            "total_accepted_recipients": 3,  # SparkPost counts the cc and bcc copies
            "id": message_id,
        }
        (stored,) = await base.received("other")
        body = stored["body"]
        (personalization,) = body["personalizations"]
        assert personalization["to"] == [{"email": "ann@example.com", "name": "Ann Lee"}]
        assert personalization["cc"] == [{"email": "cee@example.com", "name": "Cee Ray"}]
        assert personalization["bcc"] == [{"email": "audit@example.com"}]
        assert personalization["custom_args"] == {"order": "7", "n": "3"}
        assert body["from"] == {"email": "shop@example.com", "name": "Zoë Shop"}
        assert body["reply_to"] == {"email": "help@example.com", "name": "Help Desk"}
        assert body["subject"] == "Order 7"
        assert body["content"] == [
            {"type": "text/plain", "value": "thanks"},
            {"type": "text/html", "value": '<p>thanks <img src="cid:logo"></p>'},
        ]
        assert body["headers"] == {"X-Order": "7"}  # CC is a field, not a header, there
        assert body["categories"] == ["receipt", "spring"]
        attachment, image = body["attachments"]
        assert (attachment["filename"], attachment["type"], attachment["disposition"]) == (
            "r.pdf",
            "application/pdf",
            "attachment",
        )
        assert base64.b64decode(attachment["content"]) == PDF
        assert (image["content_id"], image["type"], image["disposition"]) == (
            "logo",
            "image/png",
            "inline",
        )
        assert base64.b64decode(image["content"]) == PNG
        found = await base.message(message_id)
        assert (found["state"], found["vendor"]) == ("sent", "other")
        (attempt,) = found["attempts"]
        assert attempt["mode"] == "translated"
        received = found["events"][0]
        assert (received["ingress"], received["client"]) == ("sparkpost", CLIENT_NAME)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- (b) pass-through to a SparkPost vendor ------------------------------------------


async def test_a_sparkpost_vendor_gets_the_request_byte_for_byte(tmp_path: Path) -> None:
    async with router(tmp_path, {"sp": "sparkpost"}) as base:
        raw = (
            b'{"recipients":[{"address":{"email":"ann@example.com"}}], "description": "kept",'
            b' "options": {"click_tracking": false, "ip_pool": "pool-1"},'
            b' "content": {"from": "shop@example.com", "subject": "Hi", "text": "hello"}}'
        )
        answer = await base.call(post, base, raw)
        (stored,) = base.emulators["sp"].messages
        assert stored.raw_body == raw
        assert stored.headers["authorization"] == "…-key"  # sp-vendor-key, not the client's
        assert answer.status_code == 200
        assert answer.json() == {  # SparkPost's own answer, with its own id
            "results": {
                "total_rejected_recipients": 0,
                "total_accepted_recipients": 1,
                "id": stored.id,
            }
        }
        message_id = answer.headers["X-Mailmux-Message-Id"]
        found = await base.message(message_id)
        assert found["vendor_message_id"] == stored.id
        assert [a["mode"] for a in found["attempts"]] == ["passed_through"]

        sdk_answer = await base.call(
            client(base).transmissions.send,
            recipients=["ann@example.com"],
            from_email="shop@example.com",
            subject="Hi",
            text="hello",
            ip_pool="pool-1",
            description="kept",
        )
        second = base.emulators["sp"].messages[1]
        assert sdk_answer == {  # the SDK returns SparkPost's `results`
            "total_rejected_recipients": 0,
            "total_accepted_recipients": 1,
            "id": second.id,
        }
        assert second.body["options"] == {"ip_pool": "pool-1"}
        assert second.body["description"] == "kept"


# -- (c) a field only SparkPost carries ------------------------------------------------


async def test_a_template_goes_to_sparkpost_only_and_waits_for_it(tmp_path: Path) -> None:
    vendors = {"sp": "sparkpost", "other": "sendgrid"}
    async with router(tmp_path, vendors, weights={"sp": 1, "other": 100}) as base:
        sp = client(base)

        def send(to: str) -> Any:
            return sp.transmissions.send(
                recipients=[to], template="welcome", substitution_data={"name": "Ann"}
            )

        await base.call(send, "ann@example.com")
        (first,) = base.emulators["sp"].messages
        assert first.body["content"] == {"template_id": "welcome"}
        assert await base.received("other") == []

        await base.faults("sp", {"status": 503})
        answer = await base.call(send, "bob@example.com")
        message_id = answer["id"]
        assert answer["total_accepted_recipients"] == 1
        assert (await base.message(message_id))["state"] == "queued"
        assert await base.received("other") == []

        await base.faults("sp", {})

        async def delivered() -> bool:
            return (await base.message(message_id))["state"] == "sent"

        await eventually(delivered)
        kept = [m.body for m in base.emulators["sp"].messages]
        assert [b["recipients"] for b in kept].count(
            [{"address": {"email": "bob@example.com"}}]
        ) == 1
        assert await base.received("other") == []


@pytest.mark.parametrize(
    "body",
    [
        {**MINIMAL, "options": {"sandbox": True}},
        {**MINIMAL, "options": {"start_time": "2030-01-01T00:00:00+00:00"}},
        with_content(subject="Hi {{name}}"),
        {**MINIMAL, "recipients": {"list_id": "staff"}},
    ],
    ids=["sandbox", "scheduled", "substitution", "stored list"],
)
async def test_what_only_sparkpost_can_carry_is_never_translated(
    tmp_path: Path, body: dict[str, Any]
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as base:
        answer = await base.call(post, base, body)
        message_id = answer.headers["X-Mailmux-Message-Id"]
        assert answer.status_code == 400  # no vendor can carry it: SparkPost's rejection
        (error,) = answer.json()["errors"]
        assert (error["message"], error["code"]) == ("Message generation rejected", "1902")
        assert "only sparkpost can carry" in error["description"]
        assert await base.received("other") == []
        found = await base.message(message_id)
        assert found["state"] == "failed"
        assert found["attempts"] == []  # the SendGrid vendor was not even asked


# -- (d) several messages in one transmission -------------------------------------------


async def test_each_to_recipient_is_a_message_of_its_own(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as base:
        answer = await base.call(
            client(base).transmissions.send,
            recipients=["ann@example.com", "Bob <bob@example.com>"],
            cc=["cee@example.com"],
            from_email="shop@example.com",
            subject="Hi",
            text="hello",
        )
        assert (answer["total_accepted_recipients"], answer["total_rejected_recipients"]) == (3, 0)
        first, second = (m["body"]["personalizations"][0] for m in await base.received("other"))
        assert (first["to"], first["cc"]) == (
            [{"email": "ann@example.com"}],
            [{"email": "cee@example.com"}],
        )
        assert second["to"] == [{"email": "bob@example.com", "name": "Bob"}]
        assert "cc" not in second
        assert (await base.message(answer["id"]))["vendor"] == "other"


async def test_a_sparkpost_vendor_gets_each_message_narrowed_to_its_recipients(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"sp": "sparkpost"}) as base:
        body = {
            **MINIMAL,
            "recipients": [{"address": "ann@example.com"}, {"address": "bob@example.com"}],
            "options": {"ip_pool": "pool-1"},
        }
        answer = await base.call(post, base, body)
        ids = answer.headers["X-Mailmux-Message-Id"].split(", ")
        assert answer.json() == {  # mailmux's answer for the two: the first id
            "results": {
                "total_rejected_recipients": 0,
                "total_accepted_recipients": 2,
                "id": ids[0],
            }
        }
        sent = sorted((m.body for m in base.emulators["sp"].messages), key=str)
        assert sent == [
            {**body, "recipients": [{"address": "ann@example.com"}]},
            {**body, "recipients": [{"address": "bob@example.com"}]},
        ]


def test_a_partly_refused_transmission_is_a_success_that_counts_the_refused() -> None:
    reply = results_reply(
        [
            ItemResult("m1", accepted=False, reason="bounced"),
            ItemResult("m2", accepted=True, queued=True, recipients=2),
        ]
    )
    assert reply.status == 200
    doc = orjson.loads(reply.body)
    assert doc["errors"][0]["code"] == "2000"
    assert doc["results"]["id"] == "m2"
    assert (
        doc["results"]["total_accepted_recipients"],
        doc["results"]["total_rejected_recipients"],
    ) == (2, 1)
    assert doc["results"]["rcpt_to_errors"] == [
        {"message": "Message generation rejected", "description": "m1: bounced", "code": "1902"}
    ]
    refused = results_reply([ItemResult("m1", accepted=False, expired=True)])
    assert refused.status == 400
    assert orjson.loads(refused.body)["errors"][0]["code"] == "1902"


# -- (e) errors through the SDK --------------------------------------------------------


async def test_the_sdk_raises_its_exception_for_a_bad_request_and_an_unknown_key(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as base:
        with pytest.raises(SparkPostAPIException) as bad:
            await base.call(
                client(base).transmissions.send,
                recipients=["ann@example.com"],
                from_email="shop@example.com",
                text="no subject",
            )
        assert bad.value.status == 422
        assert bad.value.errors == [
            "required field is missing Code: 1400"
            " Description: content.subject is a required field \n"
        ]
        with pytest.raises(SparkPostAPIException) as unknown:
            await base.call(
                client(base, "not-a-client-key").transmissions.send,
                recipients=["ann@example.com"],
                from_email="shop@example.com",
                subject="s",
                text="t",
            )
        assert unknown.value.status == 401
        assert unknown.value.errors == ["Unauthorized. Code: none Description: none \n"]
        await nothing_anywhere(base)


# -- (f) hostile inputs ------------------------------------------------------------------


HOSTILE: list[tuple[str, bytes | dict[str, Any], int, str]] = [
    ("invalid json", b'{"recipients": [', 422, "1300"),
    ("not utf-8", b'{"x": "\xff"}', 422, "1300"),
    ("not an object", b"[1, 2]", 422, "1300"),
    ("no content", {"recipients": MINIMAL["recipients"]}, 422, "1400"),
    ("no subject", with_content(subject=None), 422, "1400"),
    ("bad address", {**MINIMAL, "recipients": [{"address": "not an address"}]}, 422, "1300"),
    ("CR/LF in a header name", with_content(headers={"X-A\r\nBcc: e@x.com": "1"}), 422, "3002"),
    ("CR/LF in a header value", with_content(headers={"X-A": "1\r\nBcc: e@x.com"}), 422, "3002"),
    ("CR/LF in the subject", with_content(subject="Hi\r\nBcc: e@x.com"), 422, "1300"),
    (
        "CR/LF in a display name",
        with_content(**{"from": {"email": "shop@example.com", "name": "Shop\r\nBcc: e@x.com"}}),
        422,
        "1300",
    ),
    (
        "CR/LF in a recipient's name",
        {**MINIMAL, "recipients": [{"address": {"email": "a@example.com", "name": "A\nB"}}]},
        422,
        "1300",
    ),
    (
        "bad base64",
        with_content(attachments=[{"name": "a", "type": "text/plain", "data": "!"}]),
        422,
        "1300",
    ),
    ("raw MIME and a subject", with_content(email_rfc822="From: a@x.com\r\n\r\nhi"), 422, "1301"),
    ("oversize", with_content(text="x" * 3000), 422, "1300"),
]


async def test_hostile_requests_get_sparkpost_errors_and_reach_no_one(tmp_path: Path) -> None:
    limits = {"max_request_bytes": 2500, "max_message_bytes": 2000}
    async with router(tmp_path, {"other": "sendgrid", "sp": "sparkpost"}, limits=limits) as base:
        for name, body, status, code in HOSTILE:
            answer = await base.call(post, base, body)
            assert answer.status_code == status, (name, answer.text)
            errors = answer.json()["errors"]
            assert code in {e.get("code") for e in errors}, (name, errors)
            assert all(isinstance(e["message"], str) for e in errors), name
        for authorization in ("", "Bearer " + CLIENT_KEY, "wrong-key"):
            answer = await base.call(post, base, MINIMAL, Authorization=authorization)
            assert (answer.status_code, answer.json()) == (
                401,
                {"errors": [{"message": "Unauthorized."}]},
            )
        await nothing_anywhere(base)


# -- (g) Idempotency-Key ---------------------------------------------------------------


async def test_an_idempotency_key_sends_once_and_refuses_another_body(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as base:
        first = await base.call(post, base, MINIMAL, **{"Idempotency-Key": "order-7"})
        again = await base.call(post, base, MINIMAL, **{"Idempotency-Key": "order-7"})
        assert (first.status_code, again.status_code) == (200, 200)
        assert first.json() == again.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(await base.received("other")) == 1
        other = await base.call(
            post, base, with_content(subject="Other"), **{"Idempotency-Key": "order-7"}
        )
        assert other.status_code == 422
        assert other.json()["errors"][0]["code"] == "1301"
        assert len(await base.received("other")) == 1


# -- (h) property: no 5xx, no crash ----------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
PATHS = [
    ("recipients",),
    ("recipients", 0),
    ("recipients", 0, "address"),
    ("recipients", 0, "address", "email"),
    ("recipients", 0, "address", "header_to"),
    ("recipients", 0, "tags"),
    ("recipients", 0, "metadata"),
    ("content",),
    ("content", "from"),
    ("content", "subject"),
    ("content", "headers"),
    ("content", "reply_to"),
    ("content", "attachments"),
    ("content", "inline_images"),
    ("content", "email_rfc822"),
    ("content", "template_id"),
    ("options",),
    ("options", "transactional"),
    ("metadata",),
    ("campaign_id",),
]


def mutated(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    doc: Any = orjson.loads(orjson.dumps(MINIMAL))
    doc["recipients"][0]["address"]["header_to"] = "x@example.com"
    doc["content"]["headers"] = {"CC": "c@example.com"}
    doc["options"] = {"open_tracking": True}
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return dict(doc)


BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(mutated, st.sampled_from(PATHS), JSON).map(orjson.dumps),
    JSON.map(orjson.dumps),
)
AUTH = st.one_of(
    st.just(CLIENT_KEY),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
)


async def test_no_body_or_key_makes_the_shape_fail(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid", "sp": "sparkpost"}) as base:
        seen: set[int] = set()

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(body=BODIES, key=AUTH)
        def run(body: bytes, key: str) -> None:
            answer = post(base, body, Authorization=key)
            seen.add(answer.status_code)
            assert answer.status_code < 500, answer.text
            doc = answer.json()
            assert (
                ("results" in doc) if answer.status_code == 200 else isinstance(doc["errors"], list)
            )

        await base.call(run)
        assert {200, 401, 422} <= seen, seen  # the examples reached every outcome
        assert (await base.call(post, base, MINIMAL)).status_code == 200
