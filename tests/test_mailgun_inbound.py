"""mailmux's Mailgun API: the official SDK pointed at mailmux, over real sockets.

Only the SDK's `api_url` changes. mailmux routes what it sends to emulated
vendors: a different ESP (translated), a Mailgun account (passed through,
byte for byte, under that account's domain and key), or the spool.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailgun.client import Client
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router

from mailmux.spool.base import MessageState
from mailmux.vendors.mailgun import encode_multipart

DOMAIN = "mg.client.example"
VENDOR_DOMAIN = "mg.vendor.example"  # shaped_kit's Mailgun vendor
RAW = (
    b"From: Shop <shop@example.com>\r\nTo: Ana <ana@example.org>\r\nSubject: raw hello\r\n"
    b"X-Trace: kept\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"\r\nh\xc3\xa9llo\r\n"
)
RICH: dict[str, Any] = {
    "from": "Sender Name <sender@example.com>",
    "to": ["Alice A <alice@example.com>", "bob@example.com"],
    "cc": '"Carol, C." <carol@example.com>',
    "bcc": "dave@example.com",
    "subject": "Hello rich",
    "text": "text body",
    "html": '<p>html <img src="cid:logo.png"></p>',
    "h:Reply-To": "Reply Desk <reply@example.com>",
    "h:X-Custom": "custom-value",
    "h:X-Mailgun-Variables": '{"user": "u-1", "n": 5}',
    "o:tag": ["cat1", "cat2"],
    "v:order_id": "42",
    "o:tracking": False,  # droppable: a translated send goes without it
}
FILES = [
    ("attachment", ("doc.pdf", b"%PDF-1.4 fake", "application/pdf")),
    ("inline", ("logo.png", b"\x89PNG fake", "image/png")),
]
PLAIN = {"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t"}


def client(r: Router, key: str = CLIENT_KEY) -> Client:
    return Client(auth=("api", key), api_url=r.url)


def send(r: Router, data: dict[str, Any], files: Any = None, **kwargs: Any) -> Callable[[], Any]:
    def call() -> requests.Response:
        with client(r, kwargs.pop("key", CLIENT_KEY)) as c:
            return c.messages.create(data=data, files=files, domain=DOMAIN, **kwargs)

    return call


def mailmux_id(response: requests.Response) -> str:
    return response.headers["X-Mailmux-Message-Id"]


async def settle(r: Router, message_id: str, state: str) -> dict[str, Any]:
    """The message once it reached `state` (bounded polling, no bare sleeps)."""
    for _ in range(200):
        found = await r.message(message_id)
        if found["state"] == state:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} stayed {found['state']}, not {state}")


async def nothing_kept(r: Router, *vendors: str) -> None:
    for vendor in vendors:
        assert await r.received(vendor) == []
    assert sum((await r.app.store.count_by_state()).values()) == 0


# -- (a) translated to a different ESP ---------------------------------------------------


async def test_the_sdk_s_rich_message_arrives_at_sendgrid_translated(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:
        response = await r.call(send(r, RICH, FILES))

        assert type(response) is requests.Response  # what the SDK returns, whatever the status
        assert response.status_code == 200
        message_id = mailmux_id(response)
        assert response.json() == {
            "id": f"<{message_id}@{DOMAIN}>",
            "message": "Queued. Thank you.",
        }
        (received,) = await r.received("other")
        body = received["body"]
        (personalization,) = body["personalizations"]
        assert body["from"] == {"email": "sender@example.com", "name": "Sender Name"}
        assert personalization["to"] == [
            {"email": "alice@example.com", "name": "Alice A"},
            {"email": "bob@example.com"},
        ]
        # SendGrid wants a name with a comma quoted (its outbound mapping does it)
        assert personalization["cc"] == [{"email": "carol@example.com", "name": '"Carol, C."'}]
        assert personalization["bcc"] == [{"email": "dave@example.com"}]
        assert personalization["custom_args"] == {"user": "u-1", "n": "5", "order_id": "42"}
        assert body["reply_to"] == {"email": "reply@example.com", "name": "Reply Desk"}
        assert body["subject"] == "Hello rich"
        assert body["content"] == [
            {"type": "text/plain", "value": "text body"},
            {"type": "text/html", "value": RICH["html"]},
        ]
        assert body["headers"] == {"X-Custom": "custom-value"}
        assert body["categories"] == ["cat1", "cat2"]
        attachment, inline = body["attachments"]
        assert attachment == {
            "content": base64.b64encode(b"%PDF-1.4 fake").decode(),
            "filename": "doc.pdf",
            "type": "application/pdf",
            "disposition": "attachment",
        }
        assert inline == {
            "content": base64.b64encode(b"\x89PNG fake").decode(),
            "filename": "logo.png",
            "type": "image/png",
            "disposition": "inline",
            "content_id": "logo.png",
        }
        found = await r.message(message_id)
        assert (found["state"], found["vendor"]) == ("sent", "other")
        assert found["attempts"][0]["mode"] == "translated"
        assert found["events"][0]["ingress"] == "mailgun"
        assert found["events"][0]["client"] == CLIENT_NAME


async def test_a_urlencoded_form_and_raw_mime_are_translated_too(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sparkpost"}) as r:

        def both() -> tuple[requests.Response, requests.Response]:
            with client(r) as c:
                form = c.messages.create(data=PLAIN, domain=DOMAIN)  # no files: urlencoded
                mime = c.mimemessage.create(
                    data={"to": ["ana@example.org", "hidden@example.net"], "o:tag": "raw"},
                    files={"message": RAW},
                    domain=DOMAIN,
                )
                return form, mime

        form, mime = await r.call(both)

        assert (form.status_code, mime.status_code) == (200, 200)
        assert form.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        first, second = await r.received("other")
        assert first["body"]["content"]["subject"] == "s"
        content = second["body"]["content"]
        assert content["email_rfc822"] == RAW.decode()  # the MIME as it came
        recipients = [rcpt["address"]["email"] for rcpt in second["body"]["recipients"]]
        assert recipients == ["ana@example.org", "hidden@example.net"]
        assert mime.json()["id"] == f"<{mailmux_id(mime)}@{DOMAIN}>"


# -- (b) passed through to a Mailgun vendor ----------------------------------------------


async def test_a_mailgun_vendor_gets_the_form_byte_for_byte_with_its_own_domain_and_key(
    tmp_path: Path,
) -> None:
    data = {**PLAIN, "o:tracking-clicks": "htmlonly", "t:variables": '{"x": 1}'}
    async with router(tmp_path, {"mg": "mailgun"}) as r:
        response = await r.call(send(r, data, [("attachment", ("a.txt", b"hi", "text/plain"))]))

        assert response.status_code == 200
        (received,) = await r.received("mg")
        sent = response.request
        assert received["headers"][":sha256"] == hashlib.sha256(sent.body).hexdigest()
        assert received["headers"]["content-type"] == sent.headers["Content-Type"]
        assert received["headers"][":path"] == f"/v3/{VENDOR_DOMAIN}/messages"
        assert received["headers"]["authorization"] == "Basic api:…-key"  # mg-vendor-key
        assert received["body"]["t:variables"] == '{"x": 1}'  # unmodelled, intact
        assert received["body"]["o:tracking-clicks"] == "htmlonly"
        # The emulator's own answer: its id, no mailmux domain in it.
        assert response.json() == {"id": f"<{received['id']}>", "message": "Queued. Thank you."}
        found = await r.message(mailmux_id(response))
        assert found["attempts"][0]["mode"] == "passed_through"
        assert found["vendor_message_id"] == received["id"]


async def test_raw_mime_is_passed_through_to_the_vendor_s_messages_mime(tmp_path: Path) -> None:
    async with router(tmp_path, {"mg": "mailgun"}) as r:

        def call() -> requests.Response:
            with client(r) as c:
                return c.mimemessage.create(
                    data={"to": "ana@example.org"}, files={"message": RAW}, domain=DOMAIN
                )

        response = await r.call(call)

        assert response.status_code == 200
        (received,) = await r.received("mg")
        assert received["headers"][":path"] == f"/v3/{VENDOR_DOMAIN}/messages.mime"
        assert base64.b64decode(received["body"]["message"]["content"]) == RAW
        assert received["headers"][":sha256"] == hashlib.sha256(response.request.body).hexdigest()


# -- (c) exclusive fields ----------------------------------------------------------------


async def test_batch_sending_goes_only_to_mailgun_and_waits_in_the_spool_for_it(
    tmp_path: Path,
) -> None:
    batch = {
        **PLAIN,
        "to": ["ana@example.org", "bo@example.net"],
        "subject": "Hi %recipient.name%",
        "recipient-variables": '{"ana@example.org": {"name": "Ana"}, "bo@example.net": {}}',
    }
    vendors = {"mg": "mailgun", "other": "sendgrid"}
    async with router(tmp_path, vendors, weights={"mg": 1, "other": 100}) as r:
        first = await r.call(send(r, batch))
        assert first.status_code == 200
        assert len(await r.received("mg")) == 1  # despite other's weight

        await r.faults("mg", {"status": 503})
        response = await r.call(send(r, batch))

        assert response.status_code == 200  # spooled: a success in Mailgun's words
        message_id = mailmux_id(response)
        assert response.json() == {
            "id": f"<{message_id}@{DOMAIN}>",
            "message": "Queued. Thank you.",
        }
        assert (await r.message(message_id))["state"] == "queued"
        await r.faults("mg", {})
        found = await settle(r, message_id, "sent")
        assert found["vendor"] == "mg"
        assert len(await r.received("mg")) == 2  # the first, and this one exactly once
        assert await r.received("other") == []
        unsupported = [e for e in found["events"] if e.get("vendor") == "other"]
        assert unsupported == []  # never asked


async def test_a_test_mode_request_is_never_sent_as_real_mail_by_another_esp(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:
        response = await r.call(send(r, {**PLAIN, "o:testmode": "yes"}))
        assert await r.received("other") == []
        found = await r.message(mailmux_id(response))
        assert found["state"] != "sent"


# -- (e) errors through the SDK ----------------------------------------------------------


async def test_a_bad_request_and_an_unknown_key_are_what_the_sdk_s_callers_check(
    tmp_path: Path,
) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:
        bad = await r.call(send(r, {"to": "b@example.com", "subject": "s", "text": "t"}))
        unknown = await r.call(send(r, PLAIN, key="key-nobody-knows"))

        assert (bad.status_code, bad.json()) == (400, {"message": "'from' parameter is missing"})
        assert (unknown.status_code, unknown.text) == (401, "Forbidden")
        for response in (bad, unknown):
            assert type(response) is requests.Response
            with pytest.raises(requests.HTTPError):
                response.raise_for_status()
        await nothing_kept(r, "other")


# -- (f) hostile inputs ------------------------------------------------------------------


def post(r: Router, path: str, body: bytes, content_type: str) -> requests.Response:
    return requests.post(
        f"{r.url}/v3/{DOMAIN}/{path}",
        data=body,
        headers={"Content-Type": content_type},
        auth=("api", CLIENT_KEY),
        timeout=10,
    )


def form(**fields: str) -> bytes:
    return urlencode({**PLAIN, **fields}).encode()


URLENCODED = "application/x-www-form-urlencoded"
HOSTILE = [
    ("not a form", b'{"from": "a@example.com"}', "application/json", "is not a form"),
    (
        "bad multipart",
        b"--B\r\nContent-Disposition: form-data; name=from\r\n\r\na@example.com\r\n--X--",
        "multipart/form-data; boundary=B",
        "multipart",
    ),
    (
        "no to",
        urlencode({k: v for k, v in PLAIN.items() if k != "to"}).encode(),
        URLENCODED,
        "'to' parameter is missing",
    ),
    (
        "no subject",
        urlencode({k: v for k, v in PLAIN.items() if k != "subject"}).encode(),
        URLENCODED,
        "'subject' parameter is missing",
    ),
    ("bad address", form(to="not-an-address"), URLENCODED, "'to' parameter is not a valid"),
    ("CR/LF in a header name", form(**{"h:X-A\r\nBcc": "x@evil.example"}), URLENCODED, "line"),
    ("CR/LF in a header value", form(**{"h:X-A": "v\r\nBcc: x@evil.example"}), URLENCODED, ""),
    ("CR/LF in the subject", form(subject="s\r\nBcc: x@evil.example"), URLENCODED, "subject"),
    ("CR/LF in a name", form(**{"from": "A\r\nBcc: x <a@example.com>"}), URLENCODED, "'from'"),
    ("not UTF-8", b"from=%ff&to=b%40example.com", URLENCODED, "cannot be read"),
]


@pytest.mark.parametrize(
    ("case", "body", "content_type", "said"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
async def test_hostile_input_is_mailgun_s_400_and_nothing_is_sent(
    tmp_path: Path, case: str, body: bytes, content_type: str, said: str
) -> None:
    async with router(tmp_path, {"other": "sendgrid", "mg": "mailgun"}) as r:
        response = await r.call(post, r, "messages", body, content_type)

        assert response.status_code == 400, response.text
        assert said in response.json()["message"]
        assert "X-Mailmux-Message-Id" not in response.headers
        await nothing_kept(r, "other", "mg")


async def test_an_oversize_body_is_mailgun_s_413(tmp_path: Path) -> None:
    limits = {"max_request_bytes": 4096, "max_message_bytes": 4096}
    async with router(tmp_path, {"other": "sendgrid"}, limits=limits) as r:
        big = [("attachment", ("big.bin", b"x" * 8192, "application/octet-stream"))]
        response = await r.call(send(r, PLAIN, big))

        assert response.status_code == 413
        assert "413 Request Entity Too Large" in response.text
        await nothing_kept(r, "other")


async def test_messages_mime_needs_its_message_and_readable_mime(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:
        missing = await r.call(post, r, "messages.mime", b"to=a%40example.com", URLENCODED)
        unparsable = await r.call(
            post, r, "messages.mime", b"to=a%40example.com&message=no+headers", URLENCODED
        )

        assert missing.status_code == unparsable.status_code == 400
        assert "'message' parameter is missing" in missing.json()["message"]
        assert "From" in unparsable.json()["message"]
        await nothing_kept(r, "other")


# -- (g) the native Idempotency-Key ------------------------------------------------------


async def test_an_idempotency_key_sends_once_and_refuses_another_body(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid"}) as r:
        key = {"Idempotency-Key": "order-42"}
        first = await r.call(send(r, PLAIN, headers=key))  # urlencoded: the same bytes again
        again = await r.call(send(r, PLAIN, headers=key))
        other = await r.call(send(r, {**PLAIN, "text": "changed"}, headers=key))

        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(await r.received("other")) == 1
        assert other.status_code == 400
        assert "Idempotency-Key" in other.json()["message"]


# -- (h) property: no input makes mailmux fail -------------------------------------------

FIELD_NAMES = ["from", "to", "cc", "bcc", "subject", "text", "html", "h:Reply-To", "h:X-A"]
FIELD_NAMES += ["h:X-Mailgun-Variables", "v:k", "o:tag", "o:testmode", "template", "message"]
TEXT = st.text(alphabet=string.printable + 'é\x00\u2028<>",@', max_size=40)
NAMES = st.sampled_from(FIELD_NAMES)
FIELDS = st.lists(st.tuples(NAMES | NAMES | NAMES | TEXT, TEXT), max_size=4)
FILE = st.tuples(
    st.sampled_from(["attachment", "inline", "message", "x"]),
    TEXT,
    st.sampled_from(["image/png", None, "a b", "text/x"]),
    st.binary(max_size=64),
)


@st.composite
def requests_to_send(draw: st.DrawFn) -> tuple[str, bytes, str, str]:
    """A request to either endpoint: mostly a valid form with fields added or changed,
    sometimes a broken body or a bad key."""
    path = draw(st.sampled_from(["messages", "messages", "messages.mime"]))
    auth = draw(st.sampled_from(["api"] * 8 + ["wrong", "none"]))
    kind = draw(st.sampled_from(["urlencoded"] * 3 + ["multipart"] * 3 + ["mutated", "bytes"]))
    valid = draw(st.integers(0, 4)) > 0 or kind == "mutated"
    fields = (list(PLAIN.items()) if valid else []) + draw(FIELDS)
    files = draw(st.lists(FILE, max_size=2))
    if path == "messages.mime" and valid:
        files.append(("message", "message", None, RAW))
    if kind == "urlencoded":
        return path, urlencode(fields).encode(), URLENCODED, auth
    boundary = draw(st.sampled_from(["b", "mailmux-1", "x" * 70]))
    body = encode_multipart(fields, files, boundary)
    assert isinstance(body, bytes)  # small: one piece
    content_type = f"multipart/form-data; boundary={boundary}"
    if kind == "mutated":
        at = draw(st.integers(0, max(0, len(body) - 1)))
        body = body[:at] + draw(st.binary(max_size=8)) + body[at + draw(st.integers(0, 8)) :]
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
        content_type = draw(st.sampled_from([content_type, URLENCODED, "multipart/form-data", ""]))
    return path, body, content_type, auth


async def test_no_request_makes_mailmux_answer_5xx(tmp_path: Path) -> None:
    async with router(tmp_path, {"other": "sendgrid", "mg": "mailgun"}) as r:
        session = requests.Session()

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(requests_to_send())
        def property_(case: tuple[str, bytes, str, str]) -> None:
            path, body, content_type, auth = case
            headers = {"Content-Type": content_type} if content_type else {}
            credentials = {"api": ("api", CLIENT_KEY), "wrong": ("api", "nope")}.get(auth)
            response = session.post(
                f"{r.url}/v3/{DOMAIN}/{path}",
                data=body,
                headers=headers,
                auth=credentials,
                timeout=10,
            )
            assert response.status_code < 500, response.text
            if response.status_code >= 400 and response.status_code != 401:
                assert response.headers["Content-Type"].startswith(("application/json", "text/"))

        await r.call(property_)
        still = await r.call(send(r, PLAIN))
        assert still.status_code == 200
        assert MessageState.SENT in await r.app.store.count_by_state()
