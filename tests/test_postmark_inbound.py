"""Postmark's own API served by mailmux, through the official SDK (postmarker), over sockets.

postmarker is pointed at mailmux by `root_api_url` alone; the vendors behind
mailmux are emulators of Postmark or of another ESP.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router

PNG = b"\x89PNG\r\n\x1a\n-logo"
PDF = b"%PDF-1.4 receipt"
TOKEN = {"X-Postmark-Server-Token": CLIENT_KEY, "Content-Type": "application/json"}
MINIMAL = {"From": "shop@example.com", "To": "ann@example.org", "Subject": "Hi", "TextBody": "t"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def client(r: Router, token: str = CLIENT_KEY) -> PostmarkClient:
    # A path prefix would be dropped by postmarker's urljoin: the routes are at the root.
    return PostmarkClient(server_token=token, root_api_url=r.url + "/")


def with_client(r: Router, fn: Callable[[PostmarkClient], Any], token: str = CLIENT_KEY) -> Any:
    pm = client(r, token)
    try:
        return fn(pm)
    finally:
        pm.session.close()


def rich(pm: PostmarkClient) -> Any:
    return pm.emails.send(
        From='"Shop, Inc." <shop@example.com>',
        To=["Ann Lee <ann@example.org>", "bo@example.net"],
        Cc="Chen <chen@example.com>",
        Bcc=["audit@example.com"],
        ReplyTo="help@example.com",
        Subject="Receipt №42",
        TextBody="Thanks.",
        HtmlBody='<p>Thanks <img src="cid:logo@x"></p>',
        Tag="receipt",
        Metadata={"order": "42"},
        Headers={"X-Order": "42"},
        TrackOpens=True,
        TrackLinks="HtmlOnly",
        Attachments=[
            ("receipt.pdf", b64(PDF), "application/pdf"),
            ("logo.png", b64(PNG), "image/png", "cid:logo@x"),
        ],
        MessageStream="outbound",
    )


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """`check()`'s first truthy value, polled (bounded) while mailmux keeps working."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def stored_total(r: Router) -> int:
    return sum((await r.app.store.count_by_state()).values())


def attempts(record: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = record["attempts"]
    return found


# -- (a) translated to another ESP --------------------------------------------------------


async def test_a_rich_message_is_translated_for_sendgrid_and_answered_as_postmark(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:
        answer = await r.call(with_client, r, rich)

        assert (answer["ErrorCode"], answer["Message"]) == (0, "OK")
        record = await r.message(answer["MessageID"])
        assert record["state"] == "sent"
        (sent,) = await r.received("other")
        body = sent["body"]
        assert sent["headers"]["authorization"] == "Bearer …-key"
        (personalization,) = body["personalizations"]
        assert personalization["to"] == [
            {"email": "ann@example.org", "name": "Ann Lee"},
            {"email": "bo@example.net"},
        ]
        assert personalization["cc"] == [{"email": "chen@example.com", "name": "Chen"}]
        assert personalization["bcc"] == [{"email": "audit@example.com"}]
        assert personalization["custom_args"] == {"order": "42"}
        assert body["from"] == {"email": "shop@example.com", "name": "Shop, Inc."}
        assert body["reply_to"] == {"email": "help@example.com"}
        assert body["subject"] == "Receipt №42"
        assert body["content"] == [
            {"type": "text/plain", "value": "Thanks."},
            {"type": "text/html", "value": '<p>Thanks <img src="cid:logo@x"></p>'},
        ]
        assert body["headers"] == {"X-Order": "42"}
        assert body["categories"] == ["receipt"]
        pdf, logo = body["attachments"]
        assert (pdf["filename"], pdf["type"], base64.b64decode(pdf["content"])) == (
            "receipt.pdf",
            "application/pdf",
            PDF,
        )
        assert pdf.get("disposition", "attachment") == "attachment"
        assert (logo["filename"], logo["disposition"], logo["content_id"]) == (
            "logo.png",
            "inline",
            "logo@x",
        )
        assert base64.b64decode(logo["content"]) == PNG
        assert "TrackLinks" not in orjson.dumps(body).decode()
        (attempt,) = attempts(record)
        assert attempt["mode"] == "translated"
        received = next(e for e in record["events"] if e["kind"] == "received")
        assert (received["ingress"], received["client"]) == ("postmark", CLIENT_NAME)


# -- (b) passed through to Postmark --------------------------------------------------------


async def test_a_postmark_vendor_gets_the_request_byte_for_byte_with_its_own_token(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"pm": "postmark"}) as r:
        seen: list[requests.Response] = []

        def send(pm: PostmarkClient) -> Any:
            pm.session.hooks["response"].append(lambda response, **_: seen.append(response))
            return rich(pm)

        answer = await r.call(with_client, r, send)

        (stored,) = r.emulators["pm"].messages
        (response,) = seen
        assert stored.raw_body == response.request.body  # TrackLinks, MessageStream and all
        assert orjson.loads(stored.raw_body)["TrackLinks"] == "HtmlOnly"
        assert stored.headers["x-postmark-server-token"] == "…oken"  # pm-vendor-token
        # The SDK gets Postmark's own answer; mailmux's id is in its header.
        assert answer["MessageID"] == stored.id
        assert answer["To"] == "Ann Lee <ann@example.org>,bo@example.net"
        record = await r.message(response.headers["X-Mailmux-Message-Id"])
        assert record["state"] == "sent"
        (attempt,) = attempts(record)
        assert attempt["mode"] == "passed_through"


async def test_a_template_send_and_a_template_batch_pass_through_to_postmark_only(
    tmp_path: Path,
) -> None:
    vendors = {"pm": "postmark", "other": "sendgrid"}
    async with router(tmp_path, vendors, weights={"pm": 1, "other": 100}) as r:
        model = {"name": "Ann", "items": [1, 2]}

        def send(pm: PostmarkClient) -> Any:
            one = pm.emails.send_with_template(
                TemplateAlias="welcome", TemplateModel=model, From=MINIMAL["From"], To="a@x.io"
            )
            many = pm.emails.send_template_batch(
                {"TemplateId": 7, "TemplateModel": model, "From": MINIMAL["From"], "To": "b@x.io"},
                {"TemplateId": 8, "TemplateModel": {}, "From": MINIMAL["From"], "To": "c@x.io"},
            )
            return one, many

        one, many = await r.call(with_client, r, send)

        stored = r.emulators["pm"].messages
        assert one["MessageID"] == stored[0].id  # Postmark's own answer, passed through
        assert [a["ErrorCode"] for a in many] == [0, 0]
        assert sorted(m.body["TemplateId"] for m in stored[1:]) == [7, 8]  # one request each
        assert stored[0].body["TemplateModel"] == model
        assert await r.received("other") == []


# -- (c) a field only Postmark can carry -----------------------------------------------------


async def test_an_exclusive_field_waits_for_postmark_and_is_sent_once(tmp_path: Path) -> None:
    vendors = {"pm": "postmark", "other": "sendgrid"}
    async with router(tmp_path, vendors, weights={"pm": 1, "other": 100}) as r:
        await r.faults("pm", {"status": 503})

        def send(pm: PostmarkClient) -> Any:
            return pm.emails.send(**MINIMAL, MessageStream="broadcast")

        answer = await r.call(with_client, r, send)

        assert answer["ErrorCode"] == 0  # queued is a success
        assert answer["Message"] == "Message accepted, but delivery may be delayed."
        message_id = answer["MessageID"]
        assert (await r.message(message_id))["state"] == "queued"
        await r.faults("pm", {})

        async def sent() -> Any:
            record = await r.message(message_id)
            return record if record["state"] == "sent" else None

        await eventually(sent)
        (stored,) = r.emulators["pm"].messages
        assert stored.body["MessageStream"] == "broadcast"
        assert await r.received("other") == []


# -- (d) batches -------------------------------------------------------------------------------


async def test_a_batch_is_answered_per_item(tmp_path: Path) -> None:
    async with router(tmp_path, {"pm": "postmark", "other": "sendgrid"}) as r:
        items = [
            {**MINIMAL, "To": "ann@example.org", "Subject": "one"},
            {**MINIMAL, "To": "bo@example.net", "Subject": "two", "MessageStream": "broadcast"},
        ]
        answers = await r.call(with_client, r, lambda pm: pm.emails.send_batch(*items))

        assert [a["ErrorCode"] for a in answers] == [0, 0]
        records = [await r.message(a["MessageID"]) for a in answers]
        assert [rec["state"] for rec in records] == ["sent", "sent"]
        # The broadcast item went to Postmark alone, narrowed to itself, through /email.
        (two,) = [m.body for m in r.emulators["pm"].messages if m.body["Subject"] == "two"]
        assert two == {**items[1], "Headers": [], "Attachments": []}  # as postmarker sent it


async def test_a_batch_whose_items_are_refused_is_still_200_with_each_error(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:
        await r.faults("other", {"status": 400})
        items = [{**MINIMAL, "Subject": "one"}, {**MINIMAL, "Subject": "two"}]

        answers = await r.call(with_client, r, lambda pm: pm.emails.send_batch(*items))

        assert [a["ErrorCode"] for a in answers] == [300, 300]
        assert all("MessageID" not in a and a["Message"] for a in answers)
        assert await r.received("other") == []


# -- (e) errors through the SDK ----------------------------------------------------------------


async def test_the_sdk_raises_client_error_for_a_bad_request_a_rejection_and_a_bad_token(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:

        def refused(fn: Callable[[PostmarkClient], Any], token: str = CLIENT_KEY) -> Any:
            with pytest.raises(ClientError) as raised:
                with_client(r, fn, token)
            status = raised.value.__cause__.response.status_code  # type: ignore[union-attr]
            return raised.value.error_code, status

        bad = {**MINIMAL, "To": "not an address"}
        assert await r.call(refused, lambda pm: pm.emails.send(**bad)) == (300, 422)
        assert await r.call(refused, lambda pm: pm.emails.send(**MINIMAL), "wrong") == (10, 401)
        assert await r.received("other") == []
        await r.faults("other", {"status": 400})  # every vendor refuses it permanently
        assert await r.call(refused, lambda pm: pm.emails.send(**MINIMAL)) == (300, 422)


# -- (f) hostile requests ------------------------------------------------------------------------

HOSTILE: list[tuple[str, str, bytes, dict[str, str], int, int]] = [
    ("invalid JSON", "/email", b'{"From": ', TOKEN, 422, 402),
    (
        "not JSON typed",
        "/email",
        orjson.dumps(MINIMAL),
        {**TOKEN, "Content-Type": "text/plain"},
        422,
        409,
    ),
    ("an array for /email", "/email", b"[]", TOKEN, 422, 403),
    ("an object for a batch", "/email/batch", orjson.dumps(MINIMAL), TOKEN, 422, 403),
    ("missing From", "/email", orjson.dumps({**MINIMAL, "From": None}), TOKEN, 422, 300),
    ("no body", "/email", orjson.dumps({**MINIMAL, "TextBody": None}), TOKEN, 422, 300),
    ("bad address", "/email", orjson.dumps({**MINIMAL, "Cc": "x@"}), TOKEN, 422, 300),
    (
        "CR/LF in a header name",
        "/email",
        orjson.dumps({**MINIMAL, "Headers": [{"Name": "X-A\r\nBcc", "Value": "1"}]}),
        TOKEN,
        422,
        300,
    ),
    (
        "CR/LF in a header value",
        "/email",
        orjson.dumps({**MINIMAL, "Headers": [{"Name": "X-A", "Value": "1\r\nBcc: e@x.com"}]}),
        TOKEN,
        422,
        300,
    ),
    (
        "CR/LF in the subject",
        "/email",
        orjson.dumps({**MINIMAL, "Subject": "Hi\r\nBcc: evil@example.com"}),
        TOKEN,
        422,
        300,
    ),
    (
        "CR/LF in a display name",
        "/email",
        orjson.dumps({**MINIMAL, "From": "Shop\r\nBcc: e@x.com <shop@example.com>"}),
        TOKEN,
        422,
        300,
    ),
    (
        "one bad batch item",
        "/email/batch",
        orjson.dumps([MINIMAL, {**MINIMAL, "To": "bad"}]),
        TOKEN,
        422,
        300,
    ),
    ("too many batch items", "/email/batch", orjson.dumps([MINIMAL] * 501), TOKEN, 422, 410),
    ("no token", "/email", orjson.dumps(MINIMAL), {"Content-Type": "application/json"}, 401, 10),
    (
        "unknown token",
        "/email",
        orjson.dumps(MINIMAL),
        {**TOKEN, "X-Postmark-Server-Token": "nope"},
        401,
        10,
    ),
    (
        "template without a template",
        "/email/withTemplate/",
        orjson.dumps({"From": "shop@example.com", "To": "ann@example.org"}),
        TOKEN,
        422,
        300,
    ),
]


async def test_hostile_requests_get_postmark_errors_and_nothing_is_sent(tmp_path: Path) -> None:
    limits = {"max_request_bytes": 200_000, "max_message_bytes": 200_000}
    async with (
        router(tmp_path, {"pm": "postmark", "other": "sendgrid"}, limits=limits) as r,
        aiohttp.ClientSession() as http,
    ):
        oversize = orjson.dumps({**MINIMAL, "TextBody": "x" * 300_000})
        cases = [*HOSTILE, ("oversize", "/email", oversize, TOKEN, 413, 300)]
        for name, path, body, headers, status, code in cases:
            async with http.post(r.url + path, data=body, headers=headers) as answer:
                assert answer.status == status, name
                assert answer.content_type == "application/json", name
                document = await answer.json()
            assert document["ErrorCode"] == code, (name, document)
            assert isinstance(document["Message"], str) and document["Message"], name
            if name.startswith("CR/LF"):
                assert "line break" in document["Message"], name
        assert await r.received("pm") == [] and await r.received("other") == []
        assert await stored_total(r) == 0


# -- (g) Idempotency-Key ------------------------------------------------------------------------


async def test_an_idempotency_key_sends_once_and_refuses_another_body(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r, aiohttp.ClientSession() as http:
        headers = {**TOKEN, "Idempotency-Key": "order-42"}
        answers = []
        for _ in range(2):
            async with http.post(r.url + "/email", json=MINIMAL, headers=headers) as answer:
                assert answer.status == 200
                answers.append((await answer.json(), answer.headers.get("Idempotent-Replayed")))
        (first, _), (again, replayed) = answers
        assert again["MessageID"] == first["MessageID"] and replayed == "true"
        assert len(await r.received("other")) == 1

        other = {**MINIMAL, "Subject": "changed"}
        async with http.post(r.url + "/email", json=other, headers=headers) as answer:
            assert answer.status == 422
            assert (await answer.json())["ErrorCode"] == 300
        assert len(await r.received("other")) == 1


# -- (h) anything at all ------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELD = st.sampled_from(
    [
        *("From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "TextBody", "HtmlBody", "Headers"),
        *("Tag", "Metadata", "Attachments", "TrackOpens", "TrackLinks", "MessageStream"),
        *("TemplateId", "X"),
    ]
)
_PLAUSIBLE = st.sampled_from(
    [
        *(None, "", "bo@example.net", "Bo, Jr. <bo@example.net>", '"Bo, Jr." <bo@example.net>'),
        *(True, "HtmlOnly", "None", "outbound", "broadcast", [], {}, {"k": "v", "n": 1}, 7),
        ["a@b.co"],
        [{"Name": "X-A", "Value": "1"}],
        [{"Name": "a.txt", "Content": "aGk=\n"}],
        [{"Name": "i.png", "Content": "aGk=", "ContentType": "image/png", "ContentID": "cid:i"}],
    ]
)
_MUTATED = st.builds(
    lambda changes: {**MINIMAL, **changes},
    st.dictionaries(_FIELD, _PLAUSIBLE | _JSON, max_size=3),
)
_BENIGN = st.builds(
    lambda changes: {**MINIMAL, **changes}, st.dictionaries(_FIELD, _PLAUSIBLE, max_size=2)
)
_BODY = st.one_of(
    _BENIGN.map(orjson.dumps),
    st.binary(max_size=64),
    _JSON.map(orjson.dumps),
    _MUTATED.map(orjson.dumps),
    st.lists(_MUTATED, max_size=3).map(orjson.dumps),
)
_PATH = st.sampled_from(
    ["/email", "/email/batch", "/email/withTemplate/", "/email/batchWithTemplates"]
)
_PRINTABLE = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=4)
_HEADERS = st.fixed_dictionaries(
    {
        "X-Postmark-Server-Token": st.sampled_from([CLIENT_KEY] * 4 + ["nope"]),
        "Content-Type": st.sampled_from(["application/json"] * 4 + ["text/json; charset=x", "x/y"]),
    },
    optional={
        "Idempotency-Key": _PRINTABLE,
        "X-Mailmux-Class": st.sampled_from(["bulk", "Bad Class"]),
        "X-Mailmux-Deadline": st.sampled_from(["60", "-1", "soon"]),
    },
)


async def test_random_requests_never_get_a_5xx(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:
        http = requests.Session()
        seen: dict[int, int] = {}

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(path=_PATH, body=_BODY, headers=_HEADERS)
        def run(path: str, body: bytes, headers: dict[str, str]) -> None:
            answer = http.post(r.url + path, data=body, headers=headers)
            seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
            assert answer.status_code < 500, (answer.status_code, answer.text)
            document = answer.json()
            if answer.status_code >= 400:
                assert isinstance(document["ErrorCode"], int) and document["ErrorCode"] > 0
                assert isinstance(document["Message"], str)

        try:
            await r.call(run)
            answer = await r.call(
                http.post, r.url + "/email", data=orjson.dumps(MINIMAL), headers=TOKEN
            )
            assert answer.status_code == 200
            assert seen.get(200, 0) > 0, seen  # some examples reach the vendor too
        finally:
            http.close()
