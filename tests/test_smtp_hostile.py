"""Hostile input on the SMTP port: each gets a clear SMTP reply or a closed connection,
nothing is sent or spooled, and the server goes on serving the next client."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from smtp_kit import CLIENT_KEY, CLIENT_NAME, Mailmux, RawClient, mailmux

from mailmux.spool.base import MessageState

MESSAGE = b"From: shop@example.com\r\nTo: ana@example.org\r\nSubject: Hello\r\n\r\nHello.\r\n"
LIMIT = 64 * 1024  # max_message_bytes in these tests


@pytest.fixture
async def mm(tmp_path: Path) -> AsyncIterator[Mailmux]:
    async with mailmux(
        tmp_path,
        {"relay": "smtp"},
        smtp={"allow_unauthenticated": []},  # AUTH from everyone, loopback included
        limits={"max_message_bytes": LIMIT, "max_recipients": 5},
    ) as running:
        yield running


async def authenticated(mm: Mailmux) -> RawClient:
    client = await RawClient.open(mm.port)
    assert (await client.command("EHLO client.test")).startswith("250")
    plain = base64.b64encode(f"\0{CLIENT_NAME}\0{CLIENT_KEY}".encode()).decode()
    assert (await client.command(f"AUTH PLAIN {plain}")).startswith("235")
    return client


async def begin_data(mm: Mailmux) -> RawClient:
    client = await authenticated(mm)
    assert (await client.command("MAIL FROM:<shop@example.com>")).startswith("250")
    assert (await client.command("RCPT TO:<ana@example.org>")).startswith("250")
    assert (await client.command("DATA")).startswith("354")
    return client


async def nothing_left(mm: Mailmux) -> None:
    """Nothing sent, nothing spooled, and a well-behaved client is still served."""
    assert mm.total_received() == 0
    assert await mm.spooled() == 0
    client = await begin_data(mm)
    try:
        assert (await client.command(MESSAGE + b".")).startswith("250 2.0.0 Ok: queued as ")
    finally:
        await client.close()
    assert mm.total_received() == 1


async def refused_content(mm: Mailmux, content: bytes) -> str:
    client = await begin_data(mm)
    try:
        return await client.command(content + b".")
    finally:
        await client.close()


async def test_bare_lf_is_refused(mm: Mailmux) -> None:
    content = MESSAGE.replace(b"Hello.\r\n", b"Hello.\n.\nMAIL FROM:<evil@example.com>\r\n")
    assert (await refused_content(mm, content)).startswith("554 5.6.0 Message refused: bare")
    await nothing_left(mm)


async def test_bare_cr_is_refused(mm: Mailmux) -> None:
    content = MESSAGE.replace(b"Hello.\r\n", b"Hello.\r.\rmore\r\n")
    assert (await refused_content(mm, content)).startswith("554 5.6.0 Message refused: bare")
    await nothing_left(mm)


async def test_nul_bytes_are_refused(mm: Mailmux) -> None:
    content = MESSAGE.replace(b"Hello.", b"Hel\x00lo.")
    assert (await refused_content(mm, content)).startswith("554 5.6.0 Message refused: it")
    await nothing_left(mm)


async def test_a_10_mb_header_line_is_refused_without_keeping_it(mm: Mailmux) -> None:
    client = await begin_data(mm)
    try:
        await client.send(b"X-Long: " + b"a" * 10_000_000 + b"\r\n" + MESSAGE + b".\r\n")
        answer = await client.reply(timeout=30)
        assert answer.startswith("500 Line too long"), answer
    finally:
        await client.close()
    await nothing_left(mm)


async def test_header_injection_through_x_mailmux_headers_is_refused(mm: Mailmux) -> None:
    for header in (
        b"X-Mailmux-Class: otp\rBcc: evil@example.com\r\n",
        b"X-Mailmux-Tags: a\x0bb\r\n",
        b"X-Mailmux-Deadline: 60\x85Bcc: evil@example.com\r\n",
        b"X-Mailmux-Tags: =?utf-8?q?a=0D=0ABcc:_evil@example.com?=\r\n",
    ):
        answer = await refused_content(mm, header + MESSAGE)
        assert answer.startswith("554 5.6.0"), (header, answer)
    await nothing_left(mm)


async def test_too_many_recipients_are_refused_one_by_one(mm: Mailmux) -> None:
    client = await authenticated(mm)
    try:
        assert (await client.command("MAIL FROM:<shop@example.com>")).startswith("250")
        answers = [await client.command(f"RCPT TO:<r{i}@example.org>") for i in range(8)]
        assert [a[:9] for a in answers] == ["250 2.1.5"] * 5 + ["452 4.5.3"] * 3
        assert (await client.command("RSET")).startswith("250")
    finally:
        await client.close()
    await nothing_left(mm)


async def test_a_message_over_size_is_refused(mm: Mailmux) -> None:
    client = await authenticated(mm)
    try:
        answer = await client.command(f"MAIL FROM:<shop@example.com> SIZE={LIMIT + 1}")
        assert answer.startswith("552"), answer  # declared too large: refused at once
        assert (await client.command("MAIL FROM:<shop@example.com>")).startswith("250")
        assert (await client.command("RCPT TO:<ana@example.org>")).startswith("250")
        assert (await client.command("DATA")).startswith("354")
        body = (b"x" * 998 + b"\r\n") * (LIMIT // 1000 + 1)
        answer = await client.command(MESSAGE + body + b".")
        assert answer.startswith("552"), answer
    finally:
        await client.close()
    await nothing_left(mm)


async def test_pipelining_abuse_sends_nothing(mm: Mailmux) -> None:
    """A whole transaction and more, written at once without AUTH: each command is refused
    in turn, the content is taken for commands, and the session ends."""
    client = await RawClient.open(mm.port)
    try:
        burst = (
            b"EHLO client.test\r\nMAIL FROM:<shop@example.com>\r\n"
            + b"".join(b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(50))
            + b"DATA\r\n"
            + MESSAGE
            + b".\r\n"
            + b"MAIL FROM:<shop@example.com>\r\n" * 50
        )
        await client.send(burst)
        replies = []
        while answer := await client.reply():
            replies.append(answer)
        assert replies[1].startswith("530 5.7.0 Authentication required")
        assert all(not r.startswith(("250 2.0.0", "354")) for r in replies)
    finally:
        await client.close()
    await nothing_left(mm)


async def test_pipelined_transactions_after_auth_are_each_answered(mm: Mailmux) -> None:
    client = await authenticated(mm)
    try:
        one = b"MAIL FROM:<shop@example.com>\r\nRCPT TO:<ana@example.org>\r\nDATA\r\n"
        await client.send((one + MESSAGE + b".\r\n") * 3)
        replies = [await client.reply() for _ in range(12)]
        assert [r[:3] for r in replies] == ["250", "250", "354", "250"] * 3
    finally:
        await client.close()
    assert mm.total_received() == 3


async def test_a_client_vanishing_mid_data_leaves_nothing(mm: Mailmux) -> None:
    client = await begin_data(mm)
    await client.send(MESSAGE + b"and then the connection goes\r\n")
    await client.close()
    await asyncio.sleep(0.2)
    await nothing_left(mm)


async def test_a_client_resetting_mid_data_leaves_nothing(mm: Mailmux) -> None:
    client = await begin_data(mm)
    await client.send(MESSAGE[:20])
    client.writer.transport.abort()  # a TCP reset, not an orderly close
    await asyncio.sleep(0.2)
    await nothing_left(mm)


async def test_a_client_leaving_after_the_final_dot_still_gets_its_message_sent(
    mm: Mailmux,
) -> None:
    """Once the final dot arrived the message is mailmux's: a delivery under way finishes
    (and is recorded) even if the client does not wait for the reply."""
    mm.set_faults("relay", {"latency_ms": 300})
    client = await begin_data(mm)
    await client.send(MESSAGE + b".\r\n")
    await asyncio.sleep(0.1)  # the delivery has begun
    client.writer.transport.abort()

    await mm.wait_for("relay", 1)
    await asyncio.sleep(0.2)
    counts = await mm.app.store.count_by_state()
    assert mm.total_received() == 1 and counts.get(MessageState.SENT) == 1


async def test_stopping_lets_a_delivery_under_way_reply_first(mm: Mailmux) -> None:
    mm.set_faults("relay", {"latency_ms": 300})
    client = await begin_data(mm)
    other = await authenticated(mm)
    try:
        await client.send(MESSAGE + b".\r\n")
        await asyncio.sleep(0.1)
        smtp = mm.app._smtp  # the SMTP server alone: the App stops when the fixture ends
        assert smtp is not None
        stopping = asyncio.create_task(smtp.stop())
        await asyncio.sleep(0.05)
        assert (await other.command("MAIL FROM:<shop@example.com>")).startswith("421 4.3.2")
        assert (await client.reply()).startswith("250 2.0.0 Ok: queued as ")
        await asyncio.wait_for(stopping, 5)
        assert await client.reply() == ""  # then the session is closed
    finally:
        await client.close()
        await other.close()
    assert mm.total_received() == 1


async def test_a_connection_beyond_max_connections_is_told_421_and_closed(
    tmp_path: Path,
) -> None:
    async with mailmux(
        tmp_path,
        {"relay": "smtp"},
        smtp={"allow_unauthenticated": []},
        limits={"max_connections": 2},
    ) as capped:
        first, second = await RawClient.open(capped.port), await RawClient.open(capped.port)
        try:
            for client in (first, second):
                assert (await client.command("EHLO client.test")).startswith("250")
            reader, writer = await asyncio.open_connection("127.0.0.1", capped.port)
            try:
                async with asyncio.timeout(5):
                    assert (await reader.readline()).startswith(b"421 4.7.0")
                    assert await reader.read() == b""  # and closed, with no greeting
            finally:
                writer.close()
        finally:
            await first.close()
        fourth = await RawClient.open(capped.port)  # a place is free again
        try:
            assert (await fourth.command("EHLO client.test")).startswith("250")
        finally:
            await fourth.close()
            await second.close()
