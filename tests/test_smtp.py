"""SMTP relay vendor: the transaction it builds, its reply table, and real sessions with
the SMTP emulator (STARTTLS, implicit TLS, AUTH, faults, per-recipient results, reuse)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from tls_kit import Certificate, make_certificate
from vendor_kit import MESSAGE_ID

from mailmux.emulator import Faults, SmtpEmulator
from mailmux.message import Address, Attachment, Message
from mailmux.mime import parse_mime
from mailmux.vendors.base import AttemptResult, Outcome, UnsupportedFeature
from mailmux.vendors.smtp import SmtpVendor
from mailmux.vendors.smtp_mapping import (
    DATA,
    EHLO,
    MAIL,
    Refusal,
    build_envelope,
    classify_reply,
    queue_id,
    recipients_outcome,
    stable_message_id,
)

AUTH = ("relay-user", "s3cret")
TIMEOUT = 5.0
NOW = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PDF = b"%PDF-1.4 fake report"


def rich_message(**changes: Any) -> Message:
    """Everything SMTP carries: unicode names, cc/bcc, reply-to, custom headers, an inline
    image with a content id and a regular attachment (no tags or metadata)."""
    message = Message(
        sender=Address("noreply@example.com", "Zoë Ålander"),
        to=(Address("ana@example.org", "Ana María"), Address("bo@example.net", "Bo, B.")),
        cc=(Address("chen@example.com", "陈伟"),),
        bcc=(Address("audit@example.com"),),
        reply_to=(Address("support@example.com", "Support ✉"),),
        subject="Your receipt — №42 ✓",
        text="Danke für Ihre Bestellung.\n",
        html='<p>Thanks! <img src="cid:logo@x"></p>\n',
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
        attachments=(
            Attachment("logo.png", PNG, "image/png", inline=True, content_id="logo@x"),
            Attachment("reçu.pdf", PDF, "application/pdf"),
        ),
        idempotency_key="order-42",
    )
    return dataclasses.replace(message, **changes)


def plain_message(*to: str) -> Message:
    recipients = to or ("ana@example.org",)
    return Message(
        sender=Address("noreply@example.com"),
        to=tuple(Address(a) for a in recipients),
        subject="Hello",
        text="Hello.\n",
    )


# -- certificates made by the test -------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server_tls(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


@pytest.fixture(scope="module")
def client_tls(certificate: Certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate.cert))


# -- running relays and vendors ----------------------------------------------------------


@contextlib.asynccontextmanager
async def relay(**settings: Any) -> AsyncIterator[SmtpEmulator]:
    emulator = SmtpEmulator(**settings)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@contextlib.asynccontextmanager
async def vendor_for(port: int, **settings: Any) -> AsyncIterator[SmtpVendor]:
    settings = {"tls": "none", "local_hostname": "client.test", **settings}
    smtp = SmtpVendor("relay", host="127.0.0.1", port=port, **settings)
    try:
        yield smtp
    finally:
        await smtp.close()


@pytest.fixture
async def emulator() -> AsyncIterator[SmtpEmulator]:
    async with relay() as running:
        yield running


@pytest.fixture
async def vendor(emulator: SmtpEmulator) -> AsyncIterator[SmtpVendor]:
    async with vendor_for(emulator.port) as smtp:
        yield smtp


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def received(emulator: SmtpEmulator) -> list[dict[str, Any]]:
    return [stored.body for stored in emulator.messages]


# -- the transaction, without a network --------------------------------------------------


def test_envelope_carries_every_recipient_once_and_bcc_only_in_the_envelope() -> None:
    message = rich_message(cc=(Address("chen@example.com"), Address("ana@example.org")))
    envelope = build_envelope(message, MESSAGE_ID, now=NOW)

    assert envelope.sender == "noreply@example.com"
    assert envelope.recipients == (
        "ana@example.org",
        "bo@example.net",
        "chen@example.com",
        "audit@example.com",
    )
    assert b"audit@example.com" not in envelope.content
    assert envelope.content.endswith(b"\r\n")
    assert b"\n" not in envelope.content.replace(b"\r\n", b"")
    assert envelope.message_id == stable_message_id(message, MESSAGE_ID)
    assert f"Message-ID: <{envelope.message_id}>".encode() in envelope.content
    assert (envelope.smtputf8, envelope.eight_bit) == (False, True)  # UTF-8 text goes 8bit


def test_envelope_content_parses_back_to_the_message() -> None:
    message = rich_message()
    envelope = build_envelope(message, MESSAGE_ID, now=NOW)
    parsed = parse_mime(
        envelope.content, envelope_from=envelope.sender, envelope_to=envelope.recipients
    )
    assert parsed == dataclasses.replace(message, idempotency_key=None, raw_mime=envelope.content)


def test_the_message_id_header_derives_from_the_message_id_whatever_key_the_caller_gave() -> None:
    first = build_envelope(rich_message(idempotency_key="order-42"), MESSAGE_ID)
    retry = build_envelope(rich_message(idempotency_key=None), MESSAGE_ID)
    other = build_envelope(rich_message(idempotency_key="order-42"), "018f3a2b4c5d")

    assert first.message_id == retry.message_id == f"{MESSAGE_ID}.mailmux@example.com"
    assert other.message_id == "018f3a2b4c5d.mailmux@example.com"


def test_idn_domains_go_out_in_punycode_and_a_utf8_local_part_needs_smtputf8() -> None:
    idn = build_envelope(plain_message("ana@bücher.de"), MESSAGE_ID)
    assert idn.recipients == ("ana@xn--bcher-kva.de",)
    assert (idn.smtputf8, idn.eight_bit) == (False, False)

    utf8 = build_envelope(plain_message("josé@example.org"), MESSAGE_ID)
    assert utf8.recipients == ("josé@example.org",)
    assert (utf8.smtputf8, utf8.eight_bit) == (True, True)


def test_raw_mime_goes_out_as_it_came_with_crlf_line_ends() -> None:
    raw = b"From: a@example.com\nTo: b@example.org\nMessage-ID: <raw-1@example.com>\n\nhi\n"
    envelope = build_envelope(dataclasses.replace(plain_message(), raw_mime=raw), MESSAGE_ID)
    assert envelope.content == raw.replace(b"\n", b"\r\n")
    assert envelope.message_id == "raw-1@example.com"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"tags": ("receipt",)}, "tags"),
        ({"metadata": {"order": "42"}}, "metadata"),
    ],
)
async def test_what_smtp_cannot_carry_is_unsupported_before_connecting(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(UnsupportedFeature, match=reason):
        build_envelope(rich_message(**changes), MESSAGE_ID)
    # Nothing listens on that port: a connection attempt would be retriable.
    async with vendor_for(closed_port()) as smtp:
        result = await smtp.send(rich_message(**changes), TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.UNSUPPORTED
    assert result.reason.startswith(f"{reason}:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.0.0 Ok: queued as 4BqX2d0sW9z1", "4BqX2d0sW9z1"),  # Postfix
        ("OK id=1qXyZa-000AbC-12", "1qXyZa-000AbC-12"),  # Exim
        ("Ok 0100018b2c3f4d5e-1a2b-000000", "0100018b2c3f4d5e-1a2b-000000"),  # Amazon SES
        ("2.0.0 x7GKl1Yq012345 Message accepted for delivery", "x7GKl1Yq012345"),  # Sendmail
        ("OK", None),
        ("2.0.0 Ok", None),
    ],
)
def test_queue_id_is_read_from_the_final_reply(text: str, expected: str | None) -> None:
    assert queue_id(text) == expected


@pytest.mark.parametrize(
    ("stage", "code", "text", "outcome"),
    [
        (MAIL, 451, "4.3.0 Try again later", Outcome.RETRIABLE),
        (MAIL, 421, "4.4.2 Closing", Outcome.RETRIABLE),
        (MAIL, 454, "Throttling failure: Daily message quota exceeded.", Outcome.RATE_LIMITED),
        (DATA, 451, "4.7.0 Rate limit exceeded", Outcome.RATE_LIMITED),
        (MAIL, 550, "5.1.7 Bad sender address syntax", Outcome.PERMANENT),
        (MAIL, 550, "5.7.1 Sender not allowed", Outcome.VENDOR_CONFIG),
        (MAIL, 530, "Authentication required", Outcome.VENDOR_CONFIG),
        (MAIL, 535, "5.7.8 Authentication credentials invalid", Outcome.VENDOR_CONFIG),
        (DATA, 554, "5.6.0 Message content rejected", Outcome.PERMANENT),
        (DATA, 552, "5.3.4 Message too big", Outcome.PERMANENT),
        (DATA, 550, "5.7.26 Unauthenticated email (DMARC)", Outcome.VENDOR_CONFIG),
        (DATA, 554, "Message rejected: Email address is not verified.", Outcome.PERMANENT),
        (EHLO, 554, "5.7.1 Your IP is blocked", Outcome.VENDOR_CONFIG),
        (EHLO, 502, "Command not implemented", Outcome.VENDOR_CONFIG),
        (DATA, -1, "Malformed SMTP response line: garbage", Outcome.AMBIGUOUS),
        (MAIL, -1, "Malformed SMTP response line: garbage", Outcome.RETRIABLE),
    ],
)
def test_reply_table(stage: str, code: int, text: str, outcome: Outcome) -> None:
    result = classify_reply(stage, code, text)
    assert result.outcome is outcome
    assert result.reason == f"{stage}: {code} {text}"
    assert result.status == (code if code > 0 else None)


USER_UNKNOWN = Refusal("x@example.org", 550, "5.1.1 User unknown")
RELAY_DENIED = Refusal("y@example.org", 554, "5.7.1 Relay access denied")
DEFERRED = Refusal("z@example.org", 451, "4.2.0 Try later")
TOO_MANY = Refusal("w@example.org", 452, "4.5.3 Too many recipients")


@pytest.mark.parametrize(
    ("accepted", "refusals", "outcome", "status"),
    [
        (2, [], None, None),
        (1, [USER_UNKNOWN], None, None),  # some refused, some accepted: go on to DATA
        (0, [USER_UNKNOWN], Outcome.PERMANENT, 550),
        (0, [USER_UNKNOWN, RELAY_DENIED], Outcome.VENDOR_CONFIG, 554),
        (0, [USER_UNKNOWN, DEFERRED], Outcome.RETRIABLE, 451),
        (3, [DEFERRED], Outcome.RETRIABLE, 451),  # never deliver with a recipient dropped
        (3, [TOO_MANY], Outcome.UNSUPPORTED, 452),
        (0, [TOO_MANY], Outcome.RETRIABLE, 452),
    ],
)
def test_recipient_results(
    accepted: int, refusals: list[Refusal], outcome: Outcome | None, status: int | None
) -> None:
    result = recipients_outcome(accepted, refusals)
    if outcome is None:
        assert result is None
        return
    assert result is not None
    assert (result.outcome, result.status) == (outcome, status)
    assert all(str(r) in result.reason for r in refusals)


def test_too_many_recipients_names_the_relays_limit() -> None:
    result = recipients_outcome(3, [TOO_MANY])
    assert result is not None
    assert "at most 3 recipients per message, this one has 4" in result.reason


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"tls": "ssl"}, "tls: must be one of none, starttls, implicit"),
        ({"pool_size": 0}, "pool_size: must be ≥ 1"),
        ({"password": "p"}, "password: given without a username"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SmtpVendor("relay", host="127.0.0.1", port=25, **settings)


# -- real sessions: TLS and AUTH ---------------------------------------------------------


async def test_round_trip_over_starttls_with_auth_plain(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    sent = rich_message()
    async with (
        relay(auth=AUTH, tls_context=server_tls, control_port=0) as emulator,
        vendor_for(
            emulator.port,
            tls="starttls",
            username=AUTH[0],
            password=AUTH[1],
            tls_context=client_tls,
        ) as smtp,
    ):
        result = await smtp.send(sent, TIMEOUT, MESSAGE_ID)
        assert (result.outcome, result.status, result.reason) == (Outcome.ACCEPTED, 250, "")

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{emulator.control_port}/_emulator/messages") as response,
        ):
            (stored,) = await response.json()

    assert stored["id"] == result.vendor_message_id
    assert stored["headers"] == {
        "session": "1",
        "helo": "client.test",
        "tls": "starttls",
        "login": "relay-user",
    }
    body = stored["body"]
    recipients = [a.email for a in (*sent.to, *sent.cc, *sent.bcc)]
    assert body["mail_from"] == "noreply@example.com"
    assert body["rcpt_to"] == recipients
    raw = base64.b64decode(body["raw_mime"])
    assert f"SIZE={len(raw)}" in body["mail_options"]
    assert "BODY=8BITMIME" in body["mail_options"]
    assert body["subject"] == sent.subject
    assert ["Message-ID", f"<{stable_message_id(sent, MESSAGE_ID)}>"] in body["headers"]
    # Bcc reached the envelope only: not a header, not an address anywhere in the MIME.
    assert "audit@example.com" not in raw.decode()
    assert parse_mime(raw).bcc == ()
    back = parse_mime(raw, envelope_from=body["mail_from"], envelope_to=body["rcpt_to"])
    assert back.sender == sent.sender
    assert (back.to, back.cc, back.bcc, back.reply_to) == (
        sent.to,
        sent.cc,
        sent.bcc,
        sent.reply_to,
    )
    assert (back.subject, back.text, back.html) == (sent.subject, sent.text, sent.html)
    assert back.headers == sent.headers
    assert back.attachments == sent.attachments  # the inline image keeps its content id


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_with_each_mechanism_over_implicit_tls(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, mechanism: str
) -> None:
    async with (
        relay(
            auth=AUTH, auth_mechanisms=(mechanism,), tls_context=server_tls, implicit_tls=True
        ) as emulator,
        vendor_for(
            emulator.port,
            tls="implicit",
            username=AUTH[0],
            password=AUTH[1],
            tls_context=client_tls,
        ) as smtp,
    ):
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
        assert result.outcome is Outcome.ACCEPTED
        (stored,) = emulator.messages
        assert stored.id == result.vendor_message_id
        assert (stored.headers["tls"], stored.headers["login"]) == ("implicit", "relay-user")


async def test_wrong_password_is_vendor_config(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with (
        relay(auth=AUTH, tls_context=server_tls) as emulator,
        vendor_for(
            emulator.port,
            tls="starttls",
            username=AUTH[0],
            password="wrong",
            tls_context=client_tls,
        ) as smtp,
    ):
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
        assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, 535)
        assert result.reason == "AUTH: 535 5.7.8 Authentication credentials invalid"
        assert emulator.messages == []


async def test_starttls_required_but_not_offered_is_vendor_config_and_nothing_is_sent(
    emulator: SmtpEmulator,
) -> None:
    async with vendor_for(emulator.port, tls="starttls") as smtp:
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.VENDOR_CONFIG
    assert "STARTTLS: the relay does not offer it" in result.reason
    assert emulator.messages == []


@pytest.mark.parametrize(("tls", "implicit"), [("starttls", False), ("implicit", True)])
async def test_an_untrusted_certificate_is_vendor_config(
    server_tls: ssl.SSLContext, tls: str, implicit: bool
) -> None:
    async with (
        relay(tls_context=server_tls, implicit_tls=implicit) as emulator,
        vendor_for(emulator.port, tls=tls) as smtp,  # the system's trust store
    ):
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
        assert result.outcome is Outcome.VENDOR_CONFIG
        assert result.reason.startswith("TLS: the relay's certificate does not verify")
        assert emulator.messages == []


async def test_auth_configured_but_not_offered_is_vendor_config(emulator: SmtpEmulator) -> None:
    async with vendor_for(emulator.port, username=AUTH[0], password=AUTH[1]) as smtp:
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.VENDOR_CONFIG
    assert result.reason.startswith("AUTH: the relay does not offer it")


async def test_a_relay_that_wants_auth_refuses_mail_from_as_vendor_config() -> None:
    async with relay(auth=AUTH) as emulator, vendor_for(emulator.port) as smtp:
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, 530)
    assert result.reason == "MAIL FROM: 530 5.7.0 Authentication required"


async def test_a_relay_that_requires_starttls_refuses_a_clear_session(
    server_tls: ssl.SSLContext,
) -> None:
    async with (
        relay(tls_context=server_tls, require_starttls=True) as emulator,
        vendor_for(emulator.port, tls="none") as smtp,
    ):
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, 530)


async def test_smtputf8_addresses_round_trip(emulator: SmtpEmulator, vendor: SmtpVendor) -> None:
    message = dataclasses.replace(plain_message("josé@example.org"), text="¡Hola!\n")
    result = await vendor.send(message, TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.ACCEPTED
    (body,) = received(emulator)
    assert body["rcpt_to"] == ["josé@example.org"]
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(body["mail_options"])
    assert parse_mime(base64.b64decode(body["raw_mime"])).to == (Address("josé@example.org"),)


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome", "code"),
    [
        (503, Outcome.RETRIABLE, 451),
        (500, Outcome.RETRIABLE, 451),
        (429, Outcome.RATE_LIMITED, 454),
        (400, Outcome.PERMANENT, 554),
        (404, Outcome.PERMANENT, 550),
        (403, Outcome.VENDOR_CONFIG, 550),
    ],
)
async def test_injected_replies_are_classified(
    emulator: SmtpEmulator, vendor: SmtpVendor, status: int, outcome: Outcome, code: int
) -> None:
    emulator.set_faults(Faults(status=status))
    result = await vendor.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (outcome, code)
    assert result.reason.startswith(f"DATA: {code} ")
    assert emulator.messages == []


async def test_hang_after_data_is_ambiguous(emulator: SmtpEmulator, vendor: SmtpVendor) -> None:
    emulator.set_faults(Faults(hang=True))
    result = await vendor.send(plain_message(), 0.5, MESSAGE_ID)
    assert result.outcome is Outcome.AMBIGUOUS
    assert result.reason == "no reply within 0.5s (DATA)"


async def test_reset_after_data_is_ambiguous(emulator: SmtpEmulator, vendor: SmtpVendor) -> None:
    emulator.set_faults(Faults(reset=True))
    result = await vendor.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.AMBIGUOUS
    assert result.reason.startswith("connection lost (DATA)")
    assert emulator.messages == []


async def test_down_is_retriable_and_the_next_attempt_reconnects(
    emulator: SmtpEmulator, vendor: SmtpVendor
) -> None:
    assert (
        await vendor.send(plain_message(), TIMEOUT, MESSAGE_ID)
    ).outcome is Outcome.ACCEPTED  # pooled
    emulator.set_down(True)
    refused = await vendor.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert refused.outcome is Outcome.RETRIABLE
    assert refused.reason.startswith("connect failed")

    emulator.set_down(False)
    assert (await vendor.send(plain_message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED
    assert emulator.sessions == 2


async def test_nothing_listening_is_retriable() -> None:
    async with vendor_for(closed_port()) as smtp:
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.RETRIABLE
    assert result.reason.startswith("connect failed")


# -- per-recipient results ---------------------------------------------------------------


async def test_some_recipients_refused_is_accepted_with_the_refused_named(
    emulator: SmtpEmulator, vendor: SmtpVendor
) -> None:
    message = plain_message("ana@example.org", "reject-bo@example.org", "chen@example.org")
    result = await vendor.send(message, TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 250)
    assert result.reason == (
        "RCPT TO: refused reject-bo@example.org (550 5.1.1 <reject-bo@example.org>: "
        "Recipient address rejected: User unknown)"
    )
    (body,) = received(emulator)
    assert body["rcpt_to"] == ["ana@example.org", "chen@example.org"]


@pytest.mark.parametrize(
    ("recipients", "outcome", "status"),
    [
        (("reject-a@example.org", "reject-b@example.org"), Outcome.PERMANENT, 550),
        (("reject-a@example.org", "deny-b@example.org"), Outcome.VENDOR_CONFIG, 554),
        (("reject-a@example.org", "defer-b@example.org"), Outcome.RETRIABLE, 451),
        (("ana@example.org", "defer-b@example.org"), Outcome.RETRIABLE, 451),
    ],
)
async def test_refused_or_deferred_recipients_stop_the_message(
    emulator: SmtpEmulator,
    vendor: SmtpVendor,
    recipients: tuple[str, ...],
    outcome: Outcome,
    status: int,
) -> None:
    result = await vendor.send(plain_message(*recipients), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (outcome, status)
    assert emulator.messages == []


# -- connection reuse and the pool -------------------------------------------------------


async def test_two_messages_share_one_session(emulator: SmtpEmulator, vendor: SmtpVendor) -> None:
    first = await vendor.send(plain_message(), TIMEOUT, MESSAGE_ID)
    second = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)
    assert (first.outcome, second.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    assert emulator.sessions == 1
    assert [m.headers["session"] for m in emulator.messages] == ["1", "1"]


async def test_a_failed_transaction_does_not_leave_its_session_in_the_pool(
    emulator: SmtpEmulator, vendor: SmtpVendor
) -> None:
    refused = await vendor.send(plain_message("reject-a@example.org"), TIMEOUT, MESSAGE_ID)
    assert refused.outcome is Outcome.PERMANENT
    assert (await vendor.send(plain_message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED
    assert emulator.sessions == 2


async def test_a_pool_of_one_serves_concurrent_sends_in_turn(emulator: SmtpEmulator) -> None:
    async with vendor_for(emulator.port, pool_size=1) as smtp:
        results = await asyncio.gather(
            *(smtp.send(plain_message(), TIMEOUT, MESSAGE_ID) for _ in range(3))
        )
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
    assert emulator.sessions == 1


async def test_waiting_for_a_busy_pool_past_the_deadline_is_retriable(
    emulator: SmtpEmulator,
) -> None:
    emulator.set_faults(Faults(hang=True))
    async with vendor_for(emulator.port, pool_size=1) as smtp:
        holder = asyncio.create_task(
            smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
        )  # takes the slot
        waiter = asyncio.create_task(smtp.send(plain_message(), 0.2, MESSAGE_ID))
        waited = await waiter
        emulator.set_faults(Faults())
        held = await holder
    assert waited.outcome is Outcome.RETRIABLE
    assert waited.reason == "no pooled connection came free within 0.2s"
    assert held.outcome is Outcome.ACCEPTED


async def test_close_quits_pooled_sessions(emulator: SmtpEmulator) -> None:
    async with vendor_for(emulator.port) as smtp:
        assert (await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED
        await smtp.close()
        assert (await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED
    assert emulator.sessions == 2


# -- relays other than the emulator: a scripted one --------------------------------------


class ScriptedRelay:
    """A bare SMTP server whose EHLO keywords and MAIL FROM replies the test chooses,
    one list of replies per connection; it records every command it reads."""

    def __init__(
        self,
        extensions: list[str],
        mail_replies: list[list[str]],
        greeting: str = "220 scripted ESMTP",
    ) -> None:
        self.greeting = greeting
        self.extensions = extensions
        self.mail_replies = mail_replies
        self.connections = 0
        self.commands: list[str] = []
        self.messages: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        replies = self.mail_replies[self.connections] if self.mail_replies else []
        self.connections += 1
        writer.write(f"{self.greeting}\r\n".encode())
        while line := await reader.readline():
            command = line.decode().strip()
            self.commands.append(command)
            verb = command[:4].upper()
            if verb == "EHLO":
                lines = ["scripted", *self.extensions]
                writer.write(
                    "".join(f"250-{x}\r\n" for x in lines[:-1]).encode()
                    + f"250 {lines[-1]}\r\n".encode()
                )
            elif verb == "MAIL":
                reply = replies.pop(0) if replies else "250 OK"
                writer.write(f"{reply}\r\n".encode())
                if reply.startswith("421"):
                    break
            elif verb == "DATA":
                writer.write(b"354 go ahead\r\n")
                data = await reader.readuntil(b"\r\n.\r\n")
                self.messages.append(data)
                writer.write(b"250 OK\r\n")  # no queue id
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 OK\r\n")
            await writer.drain()
        await writer.drain()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 running `handler` per connection. On exit every handler
    has ended (its client is gone by then) and every connection is closed."""
    sessions: set[asyncio.Task[Any]] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        if current is not None:
            sessions.add(current)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        if sessions:
            await asyncio.wait(sessions, timeout=TIMEOUT)


def scripted(relay_script: ScriptedRelay) -> contextlib.AbstractAsyncContextManager[int]:
    return serving(relay_script.serve)


async def test_a_pooled_session_the_relay_closed_is_replaced_without_failing_the_message() -> None:
    script = ScriptedRelay(
        ["8BITMIME"], [["250 OK", "421 4.4.2 Idle timeout, closing"], ["250 OK"]]
    )
    async with scripted(script) as port, vendor_for(port) as smtp:
        first = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
        second = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert (first.outcome, second.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    assert script.connections == 2
    assert len(script.messages) == 2


async def test_without_a_queue_id_the_vendor_id_is_the_message_id() -> None:
    script = ScriptedRelay(["8BITMIME"], [])
    message = rich_message()
    async with scripted(script) as port, vendor_for(port) as smtp:
        result = await smtp.send(message, TIMEOUT, MESSAGE_ID)
    assert result == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id=stable_message_id(message, MESSAGE_ID), status=250
    )


@pytest.mark.parametrize(
    ("extensions", "message", "reason"),
    [
        (["SIZE 100"], plain_message(), "the relay takes at most 100 bytes per message"),
        (["SIZE 0"], rich_message(), "8BITMIME"),
        (["8BITMIME"], plain_message("josé@example.org"), "SMTPUTF8"),
    ],
)
async def test_what_the_relay_cannot_take_is_unsupported_before_mail_from(
    extensions: list[str], message: Message, reason: str
) -> None:
    script = ScriptedRelay(extensions, [])
    async with scripted(script) as port, vendor_for(port) as smtp:
        result = await smtp.send(message, TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.UNSUPPORTED
    assert reason in result.reason
    assert not any(c.upper().startswith("MAIL") for c in script.commands)


@pytest.mark.parametrize(
    ("greeting", "outcome"),
    [
        ("554 5.7.1 No SMTP service for you", Outcome.VENDOR_CONFIG),
        ("421 4.3.2 Too busy, try later", Outcome.RETRIABLE),
    ],
)
async def test_a_relay_that_refuses_the_session_at_the_greeting(
    greeting: str, outcome: Outcome
) -> None:
    script = ScriptedRelay([], [], greeting=greeting)
    async with scripted(script) as port, vendor_for(port) as smtp:
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
    code, _, text = greeting.partition(" ")
    assert (result.outcome, result.status) == (outcome, int(code))
    assert result.reason == f"connect: {code} {text}"


async def test_a_relay_that_never_greets_is_a_connect_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async with serving(silent) as port, vendor_for(port, connect_timeout=0.1) as smtp:
        result = await smtp.send(plain_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.reason) == (Outcome.RETRIABLE, "connect timed out")
