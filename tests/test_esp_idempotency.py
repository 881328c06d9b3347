"""An ESP's own de-duplication key is the same on every attempt and retry of one message.

Through the real Deliverer and SQLite spool, with each keyed vendor's real mapping: the
first attempt's answer is lost after the request left (ambiguous), the message is
spooled, and the retry goes to the same ESP. Both requests must carry the key derived
from mailmux's message id, or the ESP could not drop the retry when the first attempt
did reach it; another message must carry another key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from fakes import T0, FakeClock, make_message, make_rig, opened_store

from mailmux.spool.base import MessageState
from mailmux.spool.sqlite import SqliteStore
from mailmux.vendors.base import HttpRequest, HttpResponse, HttpVendor, TransportError
from mailmux.vendors.brevo import BrevoVendor
from mailmux.vendors.mailjet import MailjetVendor
from mailmux.vendors.resend import ResendVendor

LOST = TransportError("no answer within 10s", sent=True)


class ScriptedTransport:
    """Answers each request with the next scripted answer (or raises it); keeps requests."""

    def __init__(self, *answers: HttpResponse | TransportError) -> None:
        self.answers = deque(answers)
        self.requests: list[HttpRequest] = []

    async def __call__(self, request: HttpRequest, timeout: float) -> HttpResponse:
        self.requests.append(request)
        answer = self.answers.popleft()
        if isinstance(answer, TransportError):
            raise answer
        return answer

    async def close(self) -> None:
        pass


def resend(transport: ScriptedTransport) -> HttpVendor:
    return ResendVendor("resend", transport, api_key="re_test")


def brevo(transport: ScriptedTransport) -> HttpVendor:
    return BrevoVendor("brevo", transport, api_key="xkeysib-test")


def mailjet(transport: ScriptedTransport) -> HttpVendor:
    return MailjetVendor("mailjet", transport, api_key="k", api_secret="s")


def header_key(request: HttpRequest) -> str:
    return request.headers["Idempotency-Key"]


def brevo_key(request: HttpRequest) -> str:
    key: str = orjson.loads(request.body)["headers"]["idempotencyKey"]
    return key


MAILJET_SENT = b'{"Messages":[{"Status":"success","To":[{"Email":"u","MessageUUID":"u-1"}]}]}'
CASES = [
    (resend, HttpResponse(200, {}, b'{"id":"r-1"}'), header_key, True),
    (brevo, HttpResponse(201, {}, b'{"messageId":"<b-1@relay>"}'), brevo_key, False),
    (mailjet, HttpResponse(200, {}, MAILJET_SENT), header_key, True),
]


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, wall: FakeClock) -> AsyncIterator[SqliteStore]:
    async with opened_store(tmp_path / "spool.db", clock=wall) as store:
        yield store


@pytest.mark.parametrize(
    ("build", "accepted", "key_of", "key_is_the_id"), CASES, ids=["resend", "brevo", "mailjet"]
)
async def test_a_retry_after_an_ambiguous_attempt_carries_the_first_attempt_s_key(
    store: SqliteStore,
    wall: FakeClock,
    build: Callable[[ScriptedTransport], HttpVendor],
    accepted: HttpResponse,
    key_of: Callable[[HttpRequest], str],
    key_is_the_id: bool,
) -> None:
    transport = ScriptedTransport(LOST, accepted, accepted)
    rig = make_rig(store, [build(transport)], wall=wall)

    spooled = await rig.deliverer.submit(make_message())
    wall.advance(3600.0)
    [leased] = await store.lease_due(now=wall(), owner="w", lease_seconds=60, limit=10)
    state = await rig.deliverer.redeliver(leased, "w")
    other = await rig.deliverer.submit(make_message())

    assert (spooled.state, state, other.state) == (
        MessageState.QUEUED,
        MessageState.SENT,
        MessageState.SENT,
    )
    first, retry, another = map(key_of, transport.requests)
    assert first == retry != another
    if key_is_the_id:
        assert (first, another) == (spooled.id, other.id)
