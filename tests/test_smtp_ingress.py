"""SMTP submission through mailmux: smtplib with STARTTLS, implicit TLS and AUTH into HTTP
ESP emulators (translated) and the SMTP emulator (raw MIME byte for byte); the promise
(250 only once sent or spooled, 451 when neither); AUTH and TLS rules for a peer that is
not trusted (127.0.0.2)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import smtplib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from smtp_kit import (
    ANON_KEY,
    CLIENT_KEY,
    CLIENT_NAME,
    SIGNED,
    Mailmux,
    RawClient,
    in_thread,
    mailmux,
    tls_settings,
)
from tls_kit import Certificate, make_certificate

from mailmux.ingress.smtp_auth import FailureLimiter, TrustedPeers
from mailmux.spool.base import Event, MessageRecord, MessageState

SUBMITTED = (
    b"From: Shop <shop@example.com>\r\n"
    b"To: Ana <ana@example.org>\r\n"
    b"Subject: Your order\r\n"
    b"X-Mailmux-Class: otp\r\n"
    b"X-Mailmux-Deadline: 30\r\n"  # sooner than the otp class's 60 s, so it wins
    b"X-Mailmux-Tags: orders, receipts\r\n"
    b"\r\n"
    b"Thanks for your order.\r\n"
)

#: A plain SMTP relay has no place for tags (its vendor refuses them).
UNTAGGED = SUBMITTED.replace(b"X-Mailmux-Tags: orders, receipts\r\n", b"")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


def submit(
    mm: Mailmux,
    content: bytes,
    recipients: Sequence[str] = ("ana@example.org",),
    *,
    login: tuple[str, str] | None = (CLIENT_NAME, CLIENT_KEY),
    starttls: Certificate | None = None,
    source: str = "127.0.0.1",
    sender: str = "shop@example.com",
) -> tuple[int, str]:
    """One transaction with smtplib (in a thread): the reply to DATA."""
    with mm.client(source=source) as client:
        client.ehlo("client.test")
        if starttls is not None:
            client.starttls(context=starttls.client_context())
            client.ehlo("client.test")
        if login is not None:
            client.login(*login)
        code, text = client.mail(sender)
        assert code == 250, text
        for address in recipients:
            code, text = client.rcpt(address)
            assert code == 250, text
        code, text = client.data(content)
        return code, text.decode()


def queued_id(text: str) -> str:
    prefix = "2.0.0 Ok: queued as "
    assert text.startswith(prefix), text
    return text.removeprefix(prefix)


# -- delivering ---------------------------------------------------------------------------


async def test_starttls_and_auth_deliver_to_an_http_esp_translated(
    tmp_path: Path, certificate: Certificate
) -> None:
    async with mailmux(
        tmp_path, {"esp": "sendgrid"}, smtp=tls_settings(certificate, require_tls=True)
    ) as mm:
        recipients = ["ana@example.org", "audit@example.net"]  # the second one is a Bcc
        code, text = await in_thread(submit, mm, SUBMITTED, recipients, starttls=certificate)

        assert code == 250
        message_id = queued_id(text)
        [sent] = mm.received("esp")
        assert sent["from"] == {"email": "shop@example.com", "name": "Shop"}
        assert sent["subject"] == "Your order"
        [personalization] = sent["personalizations"]
        assert personalization["to"] == [{"email": "ana@example.org", "name": "Ana"}]
        assert personalization["bcc"] == [{"email": "audit@example.net"}]
        assert sent["content"] == [{"type": "text/plain", "value": "Thanks for your order.\n"}]
        assert sent["categories"] == ["orders", "receipts"]
        assert not any(h.lower().startswith("x-mailmux") for h in sent.get("headers", {}))
        found = await mm.app.store.get(message_id)
        assert found is not None
        record, _ = found
        assert record.state is MessageState.SENT
        assert record.traffic_class == "otp"
        assert record.deadline is not None
        assert record.created_at + 29 < record.deadline <= record.created_at + 30


async def test_the_smtp_emulator_gets_the_raw_mime_byte_for_byte(
    tmp_path: Path, certificate: Certificate
) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}, smtp=tls_settings(certificate)) as mm:
        recipients = ["ana@example.org", "hidden@example.net"]
        code, text = await in_thread(submit, mm, SIGNED, recipients, starttls=certificate)

        assert code == 250, text
        [relayed] = mm.received("relay")
        assert base64.b64decode(relayed["raw_mime"]) == SIGNED  # signature still valid
        assert sorted(relayed["rcpt_to"]) == recipients
        assert mm.emulators["relay"].messages[0].id in (await _vendor_ids(mm, queued_id(text)))


async def _vendor_ids(mm: Mailmux, message_id: str) -> list[str | None]:
    found = await mm.app.store.get(message_id)
    assert found is not None
    return [found[0].vendor_message_id]


async def test_x_mailmux_headers_are_stripped_before_a_raw_mime_vendor(
    tmp_path: Path,
) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}) as mm:
        content = SUBMITTED.replace(b"To: Ana", b"Bcc: secret@example.net\r\nTo: Ana")
        content = content.replace(b"X-Mailmux-Tags: orders, receipts\r\n", b"")
        recipients = ["ana@example.org", "secret@example.net"]
        code, text = await in_thread(submit, mm, content, recipients)

        assert code == 250, text
        raw = base64.b64decode(mm.received("relay")[0]["raw_mime"])
        assert b"X-Mailmux" not in raw and b"secret@example.net" not in raw
        assert raw.startswith(b"From: Shop <shop@example.com>\r\nTo: Ana <ana@example.org>\r\n")


async def test_tags_a_relay_cannot_carry_are_a_550_with_the_reason(tmp_path: Path) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}) as mm:
        code, text = await in_thread(submit, mm, SUBMITTED)

        assert code == 550
        assert "tags: a plain SMTP relay has no standard place for them" in text
        assert mm.total_received() == 0


async def test_implicit_tls_and_auth_login_with_an_api_key_and_any_user_name(
    tmp_path: Path, certificate: Certificate
) -> None:
    async with mailmux(
        tmp_path, {"relay": "smtp"}, smtp=tls_settings(certificate, require_tls=True)
    ) as mm:

        def run() -> tuple[int, bytes]:
            with mm.client(tls_port=True, context=certificate.client_context()) as client:
                client.ehlo("client.test")
                assert "starttls" not in client.esmtp_features  # already TLS
                client.user, client.password = "whoever", ANON_KEY
                code, text = client.auth("LOGIN", client.auth_login)
                assert code == 235, text
                client.mail("shop@example.com")
                client.rcpt("ana@example.org")
                return client.data(UNTAGGED)

        code, text = await in_thread(run)

        assert code == 250, text
        assert len(mm.received("relay")) == 1


async def test_the_client_name_is_recorded_and_size_is_advertised(tmp_path: Path) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}, limits={"max_message_bytes": 123456}) as mm:

        def features() -> dict[str, str]:
            with mm.client() as client:
                client.ehlo("client.test")
                return dict(client.esmtp_features)

        found = await in_thread(features)
        assert found["size"] == "123456"
        assert {"8bitmime", "smtputf8", "auth"} <= found.keys()

        code, text = await in_thread(submit, mm, UNTAGGED)
        assert code == 250
        stored = await mm.app.store.get(queued_id(text))
        assert stored is not None
        received = [e for e in stored[1] if e.kind.value == "received"]
        assert [e.detail.get("client") for e in received] == [CLIENT_NAME]


# -- the promise --------------------------------------------------------------------------


async def test_every_vendor_down_is_still_250_and_delivered_once_when_one_returns(
    tmp_path: Path,
) -> None:
    async with mailmux(tmp_path, {"relay": "smtp", "esp": "postmark"}) as mm:
        mm.set_faults("relay", {"down": True})
        mm.set_faults("esp", {"down": True})

        code, text = await in_thread(submit, mm, UNTAGGED)

        assert code == 250, text  # spooled: the promise holds without any vendor
        message_id = queued_id(text)
        found = await mm.app.store.get(message_id)
        assert found is not None and found[0].state is MessageState.QUEUED
        assert mm.total_received() == 0

        mm.set_faults("relay", {})
        await mm.wait_for("relay", 1)
        await asyncio.sleep(0.5)  # the retrier had time to send it again, if it would

        assert mm.total_received() == 1
        found = await mm.app.store.get(message_id)
        assert found is not None and found[0].state is MessageState.SENT


async def test_a_spool_that_cannot_store_is_451_and_nothing_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="mailmux.smtp")  # the traceback is expected
    async with mailmux(tmp_path, {"relay": "smtp"}) as mm:
        mm.set_faults("relay", {"down": True})
        insert = mm.app.store.insert

        async def broken(record: MessageRecord, events: Sequence[Event], **kwargs: Any) -> None:
            if kwargs.get("durable"):
                raise sqlite3.OperationalError("disk I/O error")
            await insert(record, events, **kwargs)

        monkeypatch.setattr(mm.app.store, "insert", broken)

        code, text = await in_thread(submit, mm, UNTAGGED)

        assert (code, text) == (451, "4.3.0 Cannot accept the message now, try again later")
        assert await mm.spooled() == 0


async def test_a_message_a_vendor_rejects_is_550_with_the_reason(tmp_path: Path) -> None:
    async with mailmux(tmp_path, {"esp": "sendgrid"}) as mm:
        mm.set_faults("esp", {"status": 400})

        code, text = await in_thread(submit, mm, SUBMITTED)

        assert code == 550, text
        assert text.startswith("5.0.0 Message ") and "rejected: " in text


async def test_an_invalid_message_is_554_with_every_reason(tmp_path: Path) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}) as mm:
        content = SUBMITTED.replace(b"X-Mailmux-Class: otp", b"X-Mailmux-Class: Not A Class")
        content = content.replace(b"Deadline: 30", b"Deadline: yesterday")

        code, text = await in_thread(submit, mm, content)

        assert code == 554
        assert text.startswith("5.6.0 Invalid message: ")
        assert "X-Mailmux-Class" in text and "X-Mailmux-Deadline" in text
        assert mm.total_received() == 0 and await mm.spooled() == 0


# -- AUTH and TLS -------------------------------------------------------------------------


def strict_settings(certificate: Certificate, **more: Any) -> dict[str, Any]:
    """TLS required, and only 127.0.0.1 trusted: 127.0.0.2 plays a remote peer."""
    return tls_settings(
        certificate, require_tls=True, allow_unauthenticated=["127.0.0.1/32"], **more
    )


async def test_a_wrong_key_is_535_and_never_logged(
    tmp_path: Path, certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-key-that-must-not-be-logged"
    async with mailmux(tmp_path, {"relay": "smtp"}, smtp=strict_settings(certificate)) as mm:

        def run(mechanism: str) -> smtplib.SMTPAuthenticationError:
            with mm.client(source="127.0.0.2") as client:
                client.starttls(context=certificate.client_context())
                client.ehlo("client.test")
                client.user, client.password = CLIENT_NAME, wrong
                method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
                with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
                    client.auth(mechanism, method)
                return caught.value

        for mechanism in ("PLAIN", "LOGIN"):
            refused = await in_thread(run, mechanism)
            assert (refused.smtp_code, refused.smtp_error) == (
                535,
                b"5.7.8 Authentication credentials invalid",
            )
        code, _ = await in_thread(submit, mm, UNTAGGED, starttls=certificate)
        assert code == 250

    plain = base64.b64encode(f"\0{CLIENT_NAME}\0{wrong}".encode()).decode()
    for secret in (wrong, CLIENT_KEY, plain, base64.b64encode(wrong.encode()).decode()):
        assert secret not in caplog.text
    assert mm.total_received() == 1


async def test_failed_auth_is_limited_per_peer(tmp_path: Path, certificate: Certificate) -> None:
    async with mailmux(
        tmp_path, {"relay": "smtp"}, smtp=strict_settings(certificate, auth_failures=2)
    ) as mm:

        async def attempt(source: str, key: str) -> tuple[str, str]:
            client = await _tls_raw(mm, source, certificate)
            try:
                plain = base64.b64encode(f"\0{CLIENT_NAME}\0{key}".encode()).decode()
                answer = await client.command(f"AUTH PLAIN {plain}")
                after = await client.reply(timeout=2.0) if answer.startswith("454") else ""
                return answer, after
            finally:
                await client.close()

        assert (await attempt("127.0.0.2", "bad-1"))[0].startswith("535 5.7.8")
        assert (await attempt("127.0.0.2", "bad-2"))[0].startswith("535 5.7.8")
        answer, after = await attempt("127.0.0.2", CLIENT_KEY)  # even the right key now
        assert answer.startswith("454 4.7.0 Too many failed authentication attempts")
        assert after == ""  # and the connection was closed
        assert (await attempt("127.0.0.1", CLIENT_KEY))[0].startswith("235")  # others pass


async def _tls_raw(mm: Mailmux, source: str, certificate: Certificate) -> RawClient:
    """A raw client on the implicit-TLS port, after EHLO."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        mm.tls_port,
        local_addr=(source, 0),
        ssl=certificate.client_context(),
        server_hostname="127.0.0.1",
    )
    client = RawClient(reader, writer)
    assert (await client.reply()).startswith("220")
    assert (await client.command("EHLO client.test")).startswith("250")
    return client


async def test_no_auth_from_a_peer_that_is_not_trusted_is_530(
    tmp_path: Path, certificate: Certificate
) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}, smtp=strict_settings(certificate)) as mm:

        def run(source: str) -> tuple[int, bytes]:
            with mm.client(source=source) as client:
                client.starttls(context=certificate.client_context())
                client.ehlo("client.test")
                return client.mail("shop@example.com")

        assert await in_thread(run, "127.0.0.2") == (530, b"5.7.0 Authentication required")
        assert (await in_thread(run, "127.0.0.1"))[0] == 250  # trusted: no AUTH needed
        assert mm.total_received() == 0


async def test_auth_and_mail_before_starttls_are_refused_when_tls_is_required(
    tmp_path: Path, certificate: Certificate
) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}, smtp=strict_settings(certificate)) as mm:
        client = await RawClient.open(mm.port, "127.0.0.2")
        try:
            ehlo = await client.command("EHLO client.test")
            assert "STARTTLS" in ehlo and "AUTH" not in ehlo  # AUTH only after STARTTLS
            plain = base64.b64encode(f"\0{CLIENT_NAME}\0{CLIENT_KEY}".encode()).decode()
            assert (await client.command(f"AUTH PLAIN {plain}")).startswith("538 5.7.11")
            assert (await client.command("MAIL FROM:<shop@example.com>")).startswith(
                "530 5.7.0 Must issue a STARTTLS command first"
            )
        finally:
            await client.close()
        # Loopback but TLS required: the trusted peer needs STARTTLS as well.
        client = await RawClient.open(mm.port, "127.0.0.1")
        try:
            await client.command("EHLO client.test")
            assert (await client.command("MAIL FROM:<shop@example.com>")).startswith("530")
        finally:
            await client.close()
        assert mm.total_received() == 0


async def test_recipients_are_judged_one_by_one(tmp_path: Path) -> None:
    async with mailmux(tmp_path, {"relay": "smtp"}, limits={"max_recipients": 2}) as mm:
        client = await RawClient.open(mm.port)
        try:
            await client.command("EHLO client.test")
            assert (await client.command("MAIL FROM:<not an address>")).startswith("5")
            assert (await client.command("MAIL FROM:<shop@example.com>")).startswith("250 2.1.0")
            assert (await client.command("RCPT TO:<ana@exa_mple.org>")).startswith("501 5.1.3")
            assert (await client.command("RCPT TO:<a@example.org>")).startswith("250 2.1.5")
            assert (await client.command("RCPT TO:<b@example.org>")).startswith("250 2.1.5")
            assert (await client.command("RCPT TO:<c@example.org>")).startswith("452 4.5.3")
            assert (await client.command("DATA")).startswith("354")
            answer = await client.command(UNTAGGED.replace(b"ana@", b"a@") + b".")
            assert answer.startswith("250 2.0.0 Ok: queued as "), answer
        finally:
            await client.close()
        [relayed] = mm.received("relay")
        assert sorted(relayed["rcpt_to"]) == ["a@example.org", "b@example.org"]


# -- the pieces ---------------------------------------------------------------------------


def test_failures_are_counted_per_peer_over_a_minute() -> None:
    now = [1000.0]
    limiter = FailureLimiter(2, clock=lambda: now[0])

    limiter.failed("192.0.2.1")
    limiter.failed("192.0.2.1")

    assert limiter.blocked("192.0.2.1") and not limiter.blocked("192.0.2.2")
    now[0] += 30
    assert limiter.blocked("192.0.2.1")
    now[0] += 31  # the first failure is over a minute old
    assert not limiter.blocked("192.0.2.1")


def test_trusted_peers_take_addresses_networks_and_mapped_v4() -> None:
    trusted = TrustedPeers([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1")])

    assert "127.0.0.2" in trusted and "::1" in trusted and "::ffff:127.0.0.1" in trusted
    assert "10.0.0.1" not in trusted and "" not in trusted and "fe80::1%eth0" not in trusted


def test_aiosmtpds_own_log_keeps_only_its_warnings(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import mailmux.ingress.smtp_server  # noqa: F401  (sets aiosmtpd's log up)

    aiosmtpd = logging.getLogger("mail.log")
    with caplog.at_level(logging.DEBUG):
        aiosmtpd.info("('127.0.0.1', 5000) recip: ana@example.org")  # every command, at INFO
        aiosmtpd.warning("Session.login_data is deprecated and will be removed in version 2.0")
        aiosmtpd.warning("something else")
    assert [r.getMessage() for r in caplog.records if r.name == "mail.log"] == ["something else"]
