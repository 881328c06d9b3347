"""The native HTTP API over a real socket on 127.0.0.1, with fake vendors and a real store."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fakes import (
    T0,
    FakeClock,
    Rig,
    ScriptedVendor,
    accepted,
    make_rig,
    permanent,
    retriable,
    vendor_config,
)

from mailmux.idempotency import IdempotencyGuard
from mailmux.ingress.api import ApiContext
from mailmux.ingress.apps import build_api_app
from mailmux.ingress.clients import ClientKeys
from mailmux.ingress.openapi import OPENAPI
from mailmux.message import MessageLimits
from mailmux.spool.base import Event, MessageRecord
from mailmux.spool.sqlite import SqliteStore
from mailmux.status import build_status
from mailmux.vendors.base import Vendor
from mailmux.vendors.sandbox import SandboxVendor

Client = TestClient[web.Request, web.Application]
KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGE: dict[str, Any] = {
    "from": "App <app@example.com>",
    "to": ["user@example.net"],
    "subject": "Your code",
    "text": "123456",
}


@dataclass
class Api:
    client: Client
    rig: Rig

    async def post(self, body: Any = None, **kwargs: Any) -> tuple[int, Any, Any]:
        """POST /v1/messages; returns status, JSON body and headers."""
        if body is not None:
            kwargs["json"] = body
        async with self.client.post("/v1/messages", **kwargs) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json(), response.headers

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        async with self.client.get(path, **kwargs) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json(), response.headers


class MakeApi(Protocol):
    def __call__(
        self,
        vendors: Iterable[Vendor],
        *,
        api_keys: Sequence[str] = (),
        max_request_bytes: int = 1024 * 1024,
        store: SqliteStore = ...,
    ) -> Awaitable[Api]: ...


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, wall: FakeClock) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "spool.db"), clock=wall)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def make_api(store: SqliteStore, wall: FakeClock) -> AsyncIterator[MakeApi]:
    """Builds the API app as mailmux.app does and serves it on 127.0.0.1."""
    clients: list[Client] = []

    async def make(
        vendors: Iterable[Vendor],
        *,
        api_keys: Sequence[str] = (),
        max_request_bytes: int = 1024 * 1024,
        store: SqliteStore = store,
    ) -> Api:
        rig = make_rig(store, vendors, wall=wall)
        kinds = {name: vendor.kind for name, vendor in rig.vendors.items()}

        async def status() -> dict[str, Any]:
            return build_status(
                rig.routes,
                kinds,
                rig.health,
                await store.count_by_state(),
                rig.deliverer.last_errors,
            )

        ctx = ApiContext(
            deliverer=rig.deliverer,
            guard=IdempotencyGuard(store, retention=86400.0, clock=wall),
            store=store,
            limits=MessageLimits(),
            keys=ClientKeys(api_keys, {}),
            status=status,
            sandboxes={n: v for n, v in rig.vendors.items() if isinstance(v, SandboxVendor)},
            clock=wall,
        )
        client: Client = TestClient(
            TestServer(build_api_app(ctx, max_request_bytes), host="127.0.0.1")
        )
        await client.start_server()
        clients.append(client)
        return Api(client, rig)

    yield make
    for client in clients:
        await client.close()


# --- POST /v1/messages: the status code says where the message is ------------------------


async def test_sent_is_200(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")])

    status, body, headers = await api.post(MESSAGE)

    assert status == 200
    assert body["state"] == "sent" and body["vendor"] == "box"
    assert body["vendor_message_id"].startswith("sandbox-")
    assert "error" not in body and "Idempotent-Replayed" not in headers


async def test_queued_is_202(make_api: MakeApi) -> None:
    api = await make_api([ScriptedVendor("a", retriable())])

    status, body, _ = await api.post(MESSAGE)

    assert status == 202
    assert (body["state"], body["vendor"], body["vendor_message_id"]) == ("queued", None, None)


async def test_failed_is_422_rejected(make_api: MakeApi) -> None:
    api = await make_api([ScriptedVendor("a", permanent("550 no such user"))])

    status, body, _ = await api.post(MESSAGE)

    assert status == 422
    assert body["state"] == "failed" and body["reason"] == "550 no such user"
    assert body["error"] == {"code": "rejected", "message": "550 no such user"}


async def test_expired_is_504(make_api: MakeApi, wall: FakeClock) -> None:
    late = ScriptedVendor("a", retriable(), on_send=lambda _: wall.advance(10.0))
    api = await make_api([late, ScriptedVendor("b", accepted())])

    status, body, _ = await api.post({**MESSAGE, "deadline": 5})

    assert status == 504
    assert body["state"] == "expired" and body["error"]["code"] == "deadline_expired"
    assert api.rig.vendor("b").calls == []
    assert late.calls[0].timeout == 5.0


# --- bad requests -------------------------------------------------------------------------


async def test_invalid_json_is_400(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")])

    status, body, _ = await api.post(
        data=b'{"from": "app@example.com",', headers={"Content-Type": "application/json"}
    )

    assert status == 400
    assert body["error"]["code"] == "invalid_json"


async def test_invalid_message_lists_every_field_error(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")])
    bad = {
        "from": "nope",
        "to": ["user@example.net", "broken@"],
        "subject": "two\nlines",
        "deadline": -5,
        "colour": "blue",
    }

    status, body, _ = await api.post(bad)

    assert status == 400
    error = body["error"]
    assert error["code"] == "invalid_message"
    assert [(d["path"], d["code"]) for d in error["details"]] == [
        ("colour", "unknown_field"),
        ("from", "invalid_address"),
        ("to[1]", "invalid_address"),
        ("subject", "header_injection"),
        ("text", "required"),
        ("deadline", "deadline_passed"),
    ]
    assert all(d["message"] for d in error["details"])
    assert api.rig.store.commits == 0  # nothing was stored for it


async def test_a_request_over_the_size_limit_is_413_json(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")], max_request_bytes=4096)

    status, body, _ = await api.post({**MESSAGE, "text": "x" * 8192})

    assert status == 413
    assert body["error"]["code"] == "request_too_large"
    assert "4096" in body["error"]["message"]
    status, _, _ = await api.post({**MESSAGE, "text": "x" * 3000})  # under the limit
    assert status == 200


async def test_a_chunked_request_over_the_size_limit_is_413_json(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")], max_request_bytes=4096)

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    over = orjson.dumps({**MESSAGE, "text": "x" * 8192})
    status, body, _ = await api.post(data=chunks(over))
    under = orjson.dumps({**MESSAGE, "text": "x" * 3000})
    status_under, receipt, _ = await api.post(data=chunks(under))

    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert status_under == 200 and receipt["state"] == "sent"


async def test_an_idempotency_key_over_256_characters_is_400(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")])

    status, body, _ = await api.post(MESSAGE, headers={"Idempotency-Key": "k" * 257})
    assert status == 400 and body["error"]["code"] == "invalid_idempotency_key"

    status, _, _ = await api.post(MESSAGE, headers={"Idempotency-Key": "k" * 256})
    assert status == 200


async def test_a_replay_says_so_in_a_header(make_api: MakeApi) -> None:
    api = await make_api([ScriptedVendor("a", accepted("esp-1"), then=accepted("esp-2"))])
    key = {"Idempotency-Key": "order-42"}

    status1, first, headers1 = await api.post(MESSAGE, headers=key)
    status2, again, headers2 = await api.post(MESSAGE, headers=key)

    assert (status1, status2) == (200, 200)
    assert "Idempotent-Replayed" not in headers1
    assert headers2["Idempotent-Replayed"] == "true"
    assert again == first and first["vendor_message_id"] == "esp-1"
    assert len(api.rig.vendor("a").calls) == 1


async def test_a_queued_replay_is_202_with_the_header(make_api: MakeApi) -> None:
    api = await make_api([ScriptedVendor("a", retriable())])
    key = {"Idempotency-Key": "order-43"}

    _, first, _ = await api.post(MESSAGE, headers=key)
    status, again, headers = await api.post(MESSAGE, headers=key)

    assert status == 202 and headers["Idempotent-Replayed"] == "true"
    assert again["id"] == first["id"]


async def test_a_key_reused_with_another_body_is_422_and_sends_nothing(make_api: MakeApi) -> None:
    api = await make_api([ScriptedVendor("a", accepted("esp-1"), then=accepted("esp-2"))])
    key = {"Idempotency-Key": "order-44"}

    status1, first, _ = await api.post(MESSAGE, headers=key)
    status2, refused, headers2 = await api.post({**MESSAGE, "text": "654321"}, headers=key)
    status3, again, _ = await api.post(MESSAGE, headers=key)

    assert status1 == 200
    assert status2 == 422 and refused["error"]["code"] == "idempotency_key_reused"
    assert "Idempotent-Replayed" not in headers2 and "id" not in refused
    assert (status3, again) == (200, first)
    assert len(api.rig.vendor("a").calls) == 1


async def test_a_replay_of_a_failed_message_repeats_the_first_422(make_api: MakeApi) -> None:
    api = await make_api([ScriptedVendor("a", permanent("mailbox unavailable"))])
    key = {"Idempotency-Key": "order-45"}

    status1, first, _ = await api.post(MESSAGE, headers=key)
    status2, again, headers = await api.post(MESSAGE, headers=key)

    assert (status1, status2) == (422, 422)
    assert again == first and headers["Idempotent-Replayed"] == "true"
    assert len(api.rig.vendor("a").calls) == 1


# --- API keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Bearer"}],
)
async def test_a_missing_or_wrong_key_is_401(make_api: MakeApi, headers: dict[str, str]) -> None:
    sandbox = SandboxVendor("box")
    api = await make_api([sandbox], api_keys=[KEY, "other-key"])
    _, sent, _ = await api.post(MESSAGE, headers=AUTH)
    paths = [f"/v1/messages/{sent['id']}", "/v1/health", "/v1/sandbox/box/messages"]

    status, body, response_headers = await api.post(MESSAGE, headers=headers)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert response_headers["WWW-Authenticate"] == "Bearer"
    for path in paths:
        status, body, response_headers = await api.get(path, headers=headers)
        assert status == 401 and body["error"]["code"] == "unauthorized", path
        assert response_headers["WWW-Authenticate"] == "Bearer"
    assert len(sandbox.entries) == 1  # only the authorized request was sent


async def test_the_right_key_is_let_through(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")], api_keys=[KEY, "other-key"])

    status, sent, _ = await api.post(MESSAGE, headers=AUTH)
    assert status == 200
    status, _, _ = await api.post(MESSAGE, headers={"Authorization": "Bearer other-key"})
    assert status == 200
    status, _, _ = await api.post(MESSAGE, headers={"Authorization": f"bearer {KEY}"})
    assert status == 200  # the scheme name is case-insensitive (RFC 9110)
    for path in (f"/v1/messages/{sent['id']}", "/v1/health", "/v1/sandbox/box/messages"):
        status, _, _ = await api.get(path, headers=AUTH)
        assert status == 200, path
    status, _, _ = await api.get("/v1/openapi.json")  # documented as public ("security": [])
    assert status == 200


# --- GET routes ---------------------------------------------------------------------------


async def test_get_message_shows_attempts_and_events(make_api: MakeApi) -> None:
    api = await make_api([ScriptedVendor("a", retriable()), ScriptedVendor("b", accepted("e-9"))])
    _, sent, _ = await api.post({**MESSAGE, "class": "otp"})

    status, body, _ = await api.get(f"/v1/messages/{sent['id']}")

    assert status == 200
    assert (body["id"], body["state"], body["vendor"], body["vendor_message_id"]) == (
        sent["id"],
        "sent",
        "b",
        "e-9",
    )
    assert (body["class"], body["created_at"], body["next_attempt_at"]) == ("otp", T0, None)
    assert [(a["vendor"], a["outcome"]) for a in body["attempts"]] == [
        ("a", "retriable"),
        ("b", "accepted"),
    ]
    assert body["attempts"][0]["status"] == 503
    assert [e["kind"] for e in body["events"]] == ["received", "attempt", "attempt", "sent"]
    assert body["events"][0]["class"] == "otp"


async def test_get_unknown_message_is_404_json(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")])

    status, body, _ = await api.get("/v1/messages/does-not-exist")

    assert status == 404
    assert body["error"]["code"] == "not_found" and "does-not-exist" in body["error"]["message"]


async def test_health_report_follows_ejections(make_api: MakeApi, store: SqliteStore) -> None:
    a = ScriptedVendor("a", vendor_config())
    b = ScriptedVendor("b", accepted(), vendor_config())
    api = await make_api([a, b])

    status, report, _ = await api.get("/v1/health")
    assert status == 200 and report["status"] == "ok"
    assert [v["name"] for v in report["vendors"]] == ["a", "b"]
    assert {v["kind"] for v in report["vendors"]} == {"scripted"}
    assert {v["state"] for v in report["vendors"]} == {"healthy"}
    assert report["spool"] == {"queued": 0, "sent": 0, "failed": 0, "expired": 0}
    assert set(report["vendors"][0]) >= {
        "weight",
        "state",
        "requests",
        "success_rate",
        "latency_p50_ms",
        "latency_p90_ms",
        "ejections",
        "ejected_until",
        "last_reason",
    }

    assert (await api.post(MESSAGE))[0] == 200  # a ejects itself, b sends
    _, report, _ = await api.get("/v1/health")
    assert report["status"] == "degraded"
    vendor_a = report["vendors"][0]
    assert (vendor_a["state"], vendor_a["last_reason"], vendor_a["ejections"]) == (
        "ejected",
        "vendor_config",
        1,
    )
    assert vendor_a["ejected_until"] is not None

    assert (await api.post(MESSAGE))[0] == 202  # b ejects itself too: spooled
    await store.flush()
    _, report, _ = await api.get("/v1/health")
    assert report["status"] == "panic"
    assert report["spool"] == {"queued": 1, "sent": 1, "failed": 0, "expired": 0}


async def test_sandbox_lists_what_it_accepted(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box"), ScriptedVendor("other")])
    await api.post({**MESSAGE, "subject": "first", "cc": ["cc@example.org"]})
    await api.post({**MESSAGE, "subject": "second", "class": "otp"})

    status, entries, _ = await api.get("/v1/sandbox/box/messages")

    assert status == 200
    assert [(e["subject"], e["class"]) for e in entries] == [
        ("first", "transactional"),
        ("second", "otp"),
    ]
    assert entries[0]["from"] == "app@example.com"
    assert (entries[0]["to"], entries[0]["cc"]) == (["user@example.net"], ["cc@example.org"])
    for name in ("other", "nowhere"):  # a scripted vendor is not a sandbox
        status, body, _ = await api.get(f"/v1/sandbox/{name}/messages")
        assert status == 404 and body["error"]["code"] == "not_found"


# --- the OpenAPI description --------------------------------------------------------------

DOCUMENTED = {
    "/v1/messages": {"post"},
    "/v1/messages/{id}": {"get"},
    "/v1/health": {"get"},
    "/v1/sandbox/{vendor}/messages": {"get"},
    "/v1/openapi.json": {"get"},
    "/metrics": {"get"},
}


async def test_openapi_describes_the_routes(make_api: MakeApi) -> None:
    api = await make_api([SandboxVendor("box")])

    status, spec, _ = await api.get("/v1/openapi.json")

    assert status == 200
    assert spec["openapi"].startswith("3.1")
    assert {path: set(ops) for path, ops in spec["paths"].items()} == DOCUMENTED
    post = spec["paths"]["/v1/messages"]["post"]
    assert {"200", "202", "400", "401", "413", "422", "504"} <= set(post["responses"])


def schema_at(document: dict[str, Any], *path: str) -> dict[str, Any]:
    """The schema at `path` in `document`, with the document's `$ref`s resolvable."""
    pointer = "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)
    return {**document, "$ref": f"#/{pointer}"}


async def test_openapi_schemas_are_json_schema_and_match_the_answers(make_api: MakeApi) -> None:
    """OpenAPI 3.1 schemas are JSON Schema 2020-12: check them, and check real answers."""
    api = await make_api([SandboxVendor("box")])
    post = ("paths", "/v1/messages", "post")
    body = ("requestBody", "content", "application/json", "schema")
    request_schema = schema_at(OPENAPI, *post, *body)
    responses = OPENAPI["paths"]["/v1/messages"]["post"]["responses"]
    response_schemas = {
        code: schema_at(OPENAPI, *post, "responses", code, "content", "application/json", "schema")
        for code, r in responses.items()
        if "content" in r
    }
    for schema in [request_schema, *response_schemas.values()]:
        jsonschema.Draft202012Validator.check_schema(schema)

    jsonschema.validate(MESSAGE, request_schema, cls=jsonschema.Draft202012Validator)
    status, receipt, _ = await api.post(MESSAGE)
    jsonschema.validate(receipt, response_schemas[str(status)])
    status, error, _ = await api.post({"to": []})
    jsonschema.validate(error, response_schemas[str(status)])


async def test_openapi_is_valid_openapi(make_api: MakeApi) -> None:
    validator = pytest.importorskip(
        "openapi_spec_validator",
        reason="openapi-spec-validator is not installed; the structural checks above still ran",
    )
    api = await make_api([SandboxVendor("box")])

    _, served, _ = await api.get("/v1/openapi.json")

    validator.validate(served)


# --- a spool that cannot write --------------------------------------------------------------


class BrokenDisk(SqliteStore):
    """A store whose durable writes fail, as on a full or failing disk."""

    async def insert(
        self,
        record: MessageRecord,
        events: Sequence[Event],
        *,
        payload: bytes | None = None,
        durable: bool,
    ) -> None:
        if durable:
            raise sqlite3.OperationalError("disk I/O error")
        await super().insert(record, events, payload=payload, durable=durable)


async def test_a_spool_that_cannot_write_is_503_json(
    make_api: MakeApi, tmp_path: Path, wall: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="mailmux.api")  # the traceback is expected
    broken = BrokenDisk(str(tmp_path / "broken.db"), clock=wall)
    await broken.open()
    try:
        api = await make_api([ScriptedVendor("a", retriable())], store=broken)

        status, body, _ = await api.post(MESSAGE)

        assert status == 503  # never "accepted": no vendor took it and the spool refused it
        assert body["error"]["code"] == "unavailable" and "state" not in body
    finally:
        await broken.close()
