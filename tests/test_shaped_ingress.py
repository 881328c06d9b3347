"""The ESP-shaped ingress's own rules, with a toy shape so no ESP's quirks get in the way.

Each ESP's shape has its own tests (`test_<esp>_inbound.py`, with the ESP's
SDK); these cover what every shape gets from the generic handler: keys,
the class / deadline / Idempotency-Key headers, one key shared out over a
request's messages, the ESP's own answer passed back, the answer when
nothing could be accepted, and what the Deliverer records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fakes import T0, FakeClock, ScriptedVendor, accepted, make_rig, opened_store, permanent

from mailmux.idempotency import IdempotencyGuard
from mailmux.ingress.api import ApiContext
from mailmux.ingress.apps import build_api_app
from mailmux.ingress.clients import ClientKeys
from mailmux.message import Address, FieldError, Message, MessageLimits, Original
from mailmux.spool.sqlite import SqliteStore
from mailmux.vendors.base import AttemptResult, HttpResponse, Outcome, Vendor
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeError,
    ShapeRequest,
    json_reply,
)

KEY = "toy-key"


class ToyShape:
    """`POST /toy/send` with `{"messages": [{"to", "subject"}, ...]}`; key in `X-Toy-Key`.

    `/toy/batch` takes the same body, and narrows each message to a `send` request.
    """

    kind = "toy"
    endpoints = (Endpoint("send", "POST", "/toy/send"), Endpoint("batch", "POST", "/toy/batch"))

    def credential(self, request: ShapeRequest) -> Credential | None:
        key = request.headers.get("X-Toy-Key")
        return None if key is None else Credential(key)

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        try:
            doc = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise ShapeError(Failure.INVALID_JSON, "not JSON") from None
        items = doc.get("messages") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not items:
            raise ShapeError(
                Failure.INVALID_REQUEST,
                "messages required",
                [FieldError("messages", "required", "")],
            )
        exclusive = ("template",) if "template" in doc else ()
        return [
            Message(
                sender=Address("app@example.com"),
                to=(Address(item["to"]),),
                subject=item.get("subject", ""),
                text="hello",
                original=Original("toy", "send", request.body, "application/json", exclusive),
            )
            for item in items
        ]

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        return json_reply(
            200,
            [{"id": r.id, "ok": r.accepted, "queued": r.queued, "why": r.reason} for r in results],
        )

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        status = {Failure.UNAUTHORIZED: 401, Failure.FORBIDDEN: 403, Failure.UNAVAILABLE: 503}
        return json_reply(status.get(failure, 400), {"toy_error": failure.value, "text": message})


@dataclass
class Toy:
    client: TestClient[Any, Any]
    vendors: dict[str, Vendor]

    async def post(
        self, doc: Any, *, key: str | None = KEY, **headers: str
    ) -> tuple[int, Any, dict[str, str]]:
        sent = dict(headers)
        if key is not None:
            sent["X-Toy-Key"] = key
        answer = await self.client.post("/toy/send", data=orjson.dumps(doc), headers=sent)
        body = await answer.read()
        return answer.status, orjson.loads(body) if body else None, dict(answer.headers)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, wall: FakeClock) -> AsyncIterator[SqliteStore]:
    async with opened_store(tmp_path / "spool.db", clock=wall) as store:
        yield store


@pytest.fixture
async def toy(store: SqliteStore, wall: FakeClock) -> AsyncIterator[Any]:
    clients: list[TestClient[Any, Any]] = []

    async def make(*vendors: Vendor, clients_keys: dict[str, str] | None = None) -> Toy:
        rig = make_rig(store, vendors, wall=wall)

        async def status() -> dict[str, Any]:
            return {}

        ctx = ApiContext(
            deliverer=rig.deliverer,
            guard=IdempotencyGuard(store, retention=86400.0, clock=wall),
            store=store,
            limits=MessageLimits(),
            keys=ClientKeys([KEY], clients_keys or {}),
            status=status,
            sandboxes={},
            clock=wall,
        )
        app = build_api_app(ctx, 1024 * 1024, [ToyShape()])
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Toy(client, rig.vendors)

    yield make
    for client in clients:
        await client.close()


def one(to: str = "user@example.net", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"to": to, "subject": "hi"}], **extra}


def scripted(name: str, *steps: AttemptResult, kind: str = "other") -> ScriptedVendor:
    vendor = ScriptedVendor(name, *steps, then=accepted())
    vendor.kind = kind
    return vendor


# --- keys --------------------------------------------------------------------------------


async def test_no_key_is_the_shapes_unauthorized_and_a_wrong_one_its_forbidden(toy: Any) -> None:
    api = await toy(scripted("a"))

    assert (await api.post(one(), key=None))[:2] == (
        401,
        {"toy_error": "unauthorized", "text": "no API key given"},
    )
    status, body, _ = await api.post(one(), key="wrong")
    assert status == 403 and body["toy_error"] == "forbidden"
    assert api.vendors["a"].calls == []  # type: ignore[attr-defined]


async def test_a_named_clients_key_is_recorded_with_its_messages(
    toy: Any, store: SqliteStore
) -> None:
    api = await toy(scripted("a"), clients_keys={"billing": "billing-key"})

    status, body, headers = await api.post(one(), key="billing-key")

    assert status == 200
    found = await store.get(body[0]["id"])
    assert found is not None
    received = found[1][0].detail
    assert received["client"] == "billing" and received["ingress"] == "toy"
    assert api.vendors["a"].calls[0].message.client == "billing"  # type: ignore[attr-defined]
    assert headers["X-Mailmux-Message-Id"] == body[0]["id"]


# --- what the shape refuses reaches no vendor ----------------------------------------------


async def test_a_refused_request_is_answered_by_the_shape_and_nothing_is_sent(
    toy: Any, store: SqliteStore
) -> None:
    api = await toy(scripted("a"))

    assert (await api.post({"nope": 1}))[:2] == (
        400,
        {"toy_error": "invalid_request", "text": "messages required"},
    )
    answer = await api.client.post("/toy/send", data=b"{", headers={"X-Toy-Key": KEY})
    assert answer.status == 400 and (await answer.json())["toy_error"] == "invalid_json"
    assert api.vendors["a"].calls == []  # type: ignore[attr-defined]
    assert not any((await store.count_by_state()).values())


@pytest.mark.parametrize(
    ("headers", "where"),
    [
        ({"X-Mailmux-Class": "Not A Class"}, "X-Mailmux-Class"),
        ({"X-Mailmux-Deadline": "yesterday"}, "X-Mailmux-Deadline"),
        ({"X-Mailmux-Deadline": "-5"}, "X-Mailmux-Deadline"),
        ({"Idempotency-Key": "x" * 257}, "Idempotency-Key"),
    ],
)
async def test_bad_mailmux_headers_are_the_shapes_invalid_request(
    toy: Any, headers: dict[str, str], where: str
) -> None:
    api = await toy(scripted("a"))

    status, body, _ = await api.post(one(), **headers)

    assert status == 400 and body["toy_error"] == "invalid_request"
    assert where in body["text"]
    assert api.vendors["a"].calls == []  # type: ignore[attr-defined]


async def test_class_and_deadline_headers_set_every_message_of_the_request(
    toy: Any, wall: FakeClock
) -> None:
    api = await toy(scripted("a"))

    status, _, _ = await api.post(
        {"messages": [{"to": "a@example.net"}, {"to": "b@example.net"}]},
        **{"X-Mailmux-Class": "otp", "X-Mailmux-Deadline": "30"},
    )

    assert status == 200
    sent = [call.message for call in api.vendors["a"].calls]  # type: ignore[attr-defined]
    assert [m.traffic_class for m in sent] == ["otp", "otp"]
    assert [m.deadline for m in sent] == [wall() + 30, wall() + 30]


# --- idempotency ---------------------------------------------------------------------------


async def test_one_key_over_several_messages_replays_them_all_and_sends_nothing_new(
    toy: Any,
) -> None:
    api = await toy(scripted("a"))
    doc = {"messages": [{"to": "a@example.net"}, {"to": "b@example.net"}]}

    first = await api.post(doc, **{"Idempotency-Key": "k1"})
    again = await api.post(doc, **{"Idempotency-Key": "k1"})
    other = await api.post(one(), **{"Idempotency-Key": "k1"})

    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert again[2]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first[2]
    keys = [c.message.idempotency_key for c in api.vendors["a"].calls]  # type: ignore[attr-defined]
    assert keys == ["k1#0", "k1#1"]
    assert other[0] == 400 and other[1]["toy_error"] == "idempotency_reused"


# --- results -------------------------------------------------------------------------------


async def test_per_item_results_reach_the_shape_in_order(toy: Any) -> None:
    api = await toy(scripted("a", accepted(), permanent("mailbox unknown")))

    status, body, _ = await api.post(
        {"messages": [{"to": "a@example.net"}, {"to": "b@example.net"}]}
    )

    assert status == 200
    assert [(item["ok"], item["why"]) for item in body] == [
        (True, ""),
        (False, "mailbox unknown"),
    ]


async def test_the_esps_own_answer_is_passed_back_as_it_came(toy: Any) -> None:
    answer = HttpResponse(
        201,
        {"Content-Type": "application/x-toy", "X-Toy-Id": "esp-7", "Connection": "close"},
        b"toy says ok",
    )
    passed = AttemptResult(Outcome.ACCEPTED, "esp-7", 201, passed_through=answer)
    api = await toy(scripted("a", passed, kind="toy"))

    answer_back = await api.client.post(
        "/toy/send", data=orjson.dumps(one()), headers={"X-Toy-Key": KEY}
    )

    assert answer_back.status == 201
    assert await answer_back.read() == b"toy says ok"
    assert answer_back.headers["Content-Type"] == "application/x-toy"
    assert answer_back.headers["X-Toy-Id"] == "esp-7"
    assert answer_back.headers["X-Mailmux-Message-Id"]
    assert answer_back.headers.get("Connection") != "close"  # the ESP's connection is not ours


async def test_a_batch_narrowed_to_a_single_send_is_answered_by_the_shape(toy: Any) -> None:
    answer = HttpResponse(201, {"Content-Type": "application/x-toy"}, b"one send's answer")
    passed = AttemptResult(Outcome.ACCEPTED, "esp-7", 201, passed_through=answer)
    api = await toy(scripted("a", passed, kind="toy"))

    answer_back = await api.client.post(
        "/toy/batch", data=orjson.dumps(one()), headers={"X-Toy-Key": KEY}
    )

    assert answer_back.status == 200  # the batch's own answer, not the single send's
    (item,) = await answer_back.json()
    assert item["ok"] and item["id"] == answer_back.headers["X-Mailmux-Message-Id"]


async def test_nothing_accepted_and_nothing_spooled_is_the_shapes_unavailable(
    toy: Any, store: SqliteStore
) -> None:
    api = await toy(scripted("a", AttemptResult(Outcome.RETRIABLE, reason="down"), kind="x"))
    await store.close()  # the spool cannot take the message either

    status, body, _ = await api.post(one())

    assert status == 503 and body["toy_error"] == "unavailable"


# --- a field only one ESP can carry ---------------------------------------------------------


async def test_an_exclusive_request_goes_only_to_vendors_of_its_esp(
    toy: Any, store: SqliteStore
) -> None:
    other = scripted("other", kind="sendgrid")
    same = scripted("same", kind="toy")
    api = await toy(other, same)  # `other` is first by weight; `same` is the fallback

    status, body, _ = await api.post(one(template="welcome"))

    assert status == 200 and body[0]["ok"]
    assert other.calls == [] and len(same.calls) == 1
    found = await store.get(body[0]["id"])
    assert found is not None
    attempts = [e for e in found[1] if e.kind.value == "attempt"]
    assert [e.vendor for e in attempts] == ["same"]
    assert attempts[0].detail["mode"] == "translated"  # the scripted vendor passed nothing


async def test_an_exclusive_request_fails_when_no_vendor_of_its_esp_exists(toy: Any) -> None:
    api = await toy(scripted("other", kind="sendgrid"))

    status, body, _ = await api.post(one(template="welcome"))

    assert status == 200 and not body[0]["ok"]
    assert "only toy can carry" in body[0]["why"]
    assert api.vendors["other"].calls == []  # type: ignore[attr-defined]
