"""The server against its OpenAPI document, one generated request at a time.

schemathesis generates requests from the document mailmux serves at
/v1/openapi.json — schema-valid ones and, for every operation, invalid ones
(negative mode), plus its coverage cases (boundaries, missing and unexpected
values, other methods, other content types) — and sends them to mailmux
running as a process with api_keys configured, routing to a SendGrid-shaped
emulator on 127.0.0.1. For every answer:

- no 5xx, and status, content type, headers and body as documented;
- a schema-valid request is accepted and a schema-invalid one refused;
- one request in ten goes without a key and one in ten with a wrong one: 401;
- a refused request reaches no vendor; a sent message reached exactly the vendor its
  receipt names, and its GET /v1/messages/{id} is as documented;
- an Idempotency-Key answered before is answered the same way again.

The run is bounded (`MAX_EXAMPLES` generated cases per operation, plus coverage
cases) and derandomized, so it is the same run every time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import zlib
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
import jsonschema_rs
import orjson
import pytest
import requests
import schemathesis
from harness import MailmuxProcess, fast_config
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_openapi import INVALID, VALID

from mailmux.emulator import Emulator
from mailmux.ingress.openapi import OPENAPI, openapi_document
from mailmux.vendors.shapes import SHAPE_NAMES, SHAPES

KEY = "conformance-key"
MAX_EXAMPLES = 300
#: A deadline sooner than this might pass during delivery (504 expired, as documented).
DEADLINE_MARGIN = 600.0
#: The checks of an answer alone, whatever the request was.
ANSWER_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
T = TypeVar("T")

config = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"bearer": {"bearer": KEY}}},
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            # The key is the configured one, or none or a wrong one (see key_for): a
            # generated Authorization value would only ever be a wrong key.
            "with-security-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # A valid message is sent (or spooled); a valid GET finds its object or says 404.
            "positive_data_acceptance": {"expected-statuses": [200, 202, 404]},
            # An invalid request is refused before any vendor sees it.
            "negative_data_rejection": {"expected-statuses": [400, 404, 413]},
        },
    }
)
schema = schemathesis.openapi.from_dict(OPENAPI, config=config)
INSTANT = jsonschema_rs.validator_for(
    OPENAPI["components"]["schemas"]["Message"]["properties"]["deadline"]["anyOf"][0]
)


class Stack:
    """A SendGrid emulator and mailmux on 127.0.0.1, driven from an event loop on a thread
    of its own: schemathesis calls the API synchronously from the test's thread."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.emulator = Emulator("sendgrid")
        self.mailmux: MailmuxProcess | None = None
        self.http = requests.Session()

    @property
    def url(self) -> str:
        assert self.mailmux is not None
        return self.mailmux.url

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        await self.emulator.start()
        vendors = {
            "primary": {
                "kind": "sendgrid",
                "api_key": "SG.test",
                "base_url": f"http://127.0.0.1:{self.emulator.port}",
                "weight": 1,
            },
            # Takes only what SendGrid cannot carry (an empty subject, more than 10 tags,
            # a recipient twice, …), which mailmux knows before any request: without it
            # those valid messages would fail with "no vendor can carry this message".
            # What SendGrid refuses after a request is permanent and never reaches it.
            "spare": {"kind": "sandbox", "weight": 0},
        }
        # A slow attempt under load must not turn into a retry elsewhere: this run is
        # about the document, not failover.
        config = fast_config(
            self.workdir / "spool.db",
            vendors,
            api_keys=[KEY],
            delivery={"attempt_timeout": 5.0},
        )
        self.mailmux = MailmuxProcess(config, self.workdir)
        await self.mailmux.start()

    def stop(self) -> None:
        async def stop() -> None:
            if self.mailmux is not None:
                await self.mailmux.stop()
            await self.emulator.stop()

        try:
            self.run(stop())
        finally:
            self.http.close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    def latest(self) -> Latest:
        """What any request that reached a vendor changes."""

        async def emulated() -> tuple[int, str | None]:
            messages = self.emulator.messages
            return self.emulator.accepted_total, messages[-1].id if messages else None

        response = self.http.get(f"{self.url}/v1/sandbox/spare/messages", headers=auth(KEY))
        assert response.status_code == 200, response.text
        spared = response.json()
        accepted, newest = self.run(emulated())
        return Latest(accepted, newest, spared[-1]["vendor_message_id"] if spared else None)

    def get(self, path: str, **path_parameters: str) -> Any:
        """GET a documented route with the key; the answer must be a documented 200."""
        case = schema[path]["GET"].Case(path_parameters=path_parameters)
        response = case.call(base_url=self.url, session=self.http, headers=auth(KEY))
        case.validate_response(response, checks=ANSWER_CHECKS)
        assert response.status_code == 200, (path, path_parameters, response.text)
        return response.json()


@dataclass(frozen=True)
class Latest:
    """How many messages the emulator accepted, and the id of the newest one it and the
    sandbox vendor hold (the sandbox keeps only the last 1000: its count says nothing)."""

    emulator_accepted: int
    emulator_newest: str | None
    sandbox_newest: str | None


def assert_sent_once(receipt: Any, before: Latest, after: Latest) -> None:
    """The vendor a receipt names took that message, and no vendor took another."""
    vendor = receipt["vendor"]
    newest = {"primary": after.emulator_newest, "spare": after.sandbox_newest}
    assert newest[vendor] == receipt["vendor_message_id"], f"{vendor} does not have it"
    count = after.emulator_accepted - before.emulator_accepted
    assert count == (1 if vendor == "primary" else 0), f"the emulator took {count} messages"
    if vendor == "primary":
        assert after.sandbox_newest == before.sandbox_newest, "the sandbox took one too"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("conformance"))
    try:
        stack.start()
        # The cases are generated from OPENAPI, the native API: the server must serve
        # exactly that, and the ESP-shaped routes (their bodies are the ESPs' own, tested
        # with each ESP's SDK in test_<esp>_inbound.py).
        served = stack.http.get(f"{stack.url}/v1/openapi.json")
        assert served.status_code == 200
        shaped = openapi_document(shapes=[SHAPES[name] for name in SHAPE_NAMES])
        assert served.json() == orjson.loads(orjson.dumps(shaped))
        native = {path: item for path, item in shaped["paths"].items() if path in OPENAPI["paths"]}
        assert native == OPENAPI["paths"]
        yield stack
    finally:
        stack.stop()


@schema.hook("map_case")
def steer(context: Any, case: Any) -> Any:
    """What a case needs that its schema cannot give it, and what lets most valid messages
    try the SendGrid mapping and emulator rather than fail before.

    A deadline must lie in the future, which JSON Schema cannot say: a deadline the schema
    allows moves far enough ahead that it cannot pass during delivery (in a valid case, so
    that it is accepted; in an invalid one, so that it is refused for what makes it
    invalid). SendGrid cannot carry a message without a subject (mailmux hands those to
    the sandbox vendor): three in four valid messages without one get one.
    """
    if case.meta is None or not isinstance(case.body, dict):
        return case
    steered = fingerprint(case) % 4 != 0
    # A copy: the body may be the document's own example.
    body = case.body = copy.deepcopy(case.body)
    deadline = body.get("deadline")
    if isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline > 0:
        body["deadline"] = deadline + DEADLINE_MARGIN
    elif isinstance(deadline, str) and INSTANT.is_valid(deadline):
        soon = datetime.now(UTC).timestamp() + DEADLINE_MARGIN
        if datetime.fromisoformat(deadline.upper()).timestamp() < soon:
            year = "9996" if deadline[4:10] == "-02-29" else "9999"  # 9996 is a leap year
            body["deadline"] = year + deadline[4:]
    if case.meta.generation.mode.is_negative:
        return case
    if steered and not body.get("subject"):
        body["subject"] = "a subject"
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and key:
        # A key stands for one request: a valid case carries its body's own key, for a
        # generated key reused with another body is refused (422 idempotency_key_reused).
        # The digest is of the body as sent: after every change above, and with its keys
        # in their order (two bodies with the same fields in another order are two bodies
        # to the server, which hashes the bytes).
        digest = f"-{zlib.crc32(json.dumps(body).encode()):08x}"
        case.headers = {**case.headers, "Idempotency-Key": key[: 256 - len(digest)] + digest}
    return case


def fingerprint(case: Any) -> int:
    """A number decided by the case's content alone, the same whenever it is sent."""
    content = (case.method, case.path_parameters, case.headers, case.body)
    text = json.dumps(content, sort_keys=True, default=lambda value: type(value).__name__)
    return zlib.crc32(text.encode())


def key_for(case: Any) -> str | None:
    """The API key a case is sent with: mostly the right one, in one case of ten none and in
    one of ten a wrong one; decided by the case's content, so that a replay sends the same."""
    return {0: None, 1: "wrong-key"}.get(fingerprint(case) % 10, KEY)


def needs_key(case: Any) -> bool:
    operation = OPENAPI["paths"][case.path].get(case.method.lower())
    return operation is not None and bool(operation.get("security", OPENAPI["security"]))


@dataclass
class Run:
    """What the run has seen, across cases."""

    #: The first answer (status, body) to each Idempotency-Key the server stored.
    answered: dict[str, tuple[int, Any]] = field(default_factory=dict)
    #: Requests refused for reusing a key with another body.
    reused: int = 0
    #: Answers by (operation, generation mode, status).
    seen: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    #: Messages sent, by the vendor that took them.
    sent: Counter[str] = field(default_factory=Counter)


run = Run()


@schema.parametrize()
@hypothesis.settings(derandomize=True, database=None, deadline=None, print_blob=False)
def test_the_server_does_what_its_document_says(case: Any, stack: Stack) -> None:
    key = key_for(case)
    if key != KEY:
        headers = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
        case.headers = {**headers, **(auth(key) if key else {})}
    before = stack.latest()

    response = case.call(base_url=stack.url, session=stack.http)

    status = response.status_code
    mode = case.meta.generation.mode.value if case.meta else "explicit"
    run.seen[(case.operation.label, mode, status)] += 1
    if key != KEY and needs_key(case):
        assert status == 401, f"{status} with {'no key' if key is None else 'a wrong key'}"
    assert status != 202, "queued, although every vendor is healthy"
    replayed = check_replay(case, response)
    after = stack.latest()
    if case.method == "POST" and status == 200 and not replayed:
        assert_sent_once(response.json(), before, after)
        run.sent[response.json()["vendor"]] += 1
    else:
        assert after == before, f"answered {status} (replayed: {replayed}), yet sent"
    if case.method == "POST" and status in (200, 422, 504) and not is_reused(response):
        receipt = response.json()
        state = stack.get("/v1/messages/{id}", id=receipt["id"])
        shown = ("id", "state", "vendor_message_id")
        assert {k: state[k] for k in shown} == {k: receipt[k] for k in shown}

    if status >= 400:
        assert is_json_error(response), response.text
    if key == KEY:
        case.validate_response(response)
    else:  # only the answer is checked: whatever the request, it is refused for its key
        case.validate_response(response, checks=ANSWER_CHECKS)


def check_replay(case: Any, response: Any) -> bool:
    """Whether `response` replays an earlier answer to its Idempotency-Key — which it must
    then be, exactly; a first answer is remembered."""
    key = ((case.headers or {}).get("Idempotency-Key") or "").strip(" \t") or None
    status = response.status_code
    if response.headers.get("idempotent-replayed") == ["true"]:
        assert key in run.answered, f"replayed an unknown key {key!r}"
        assert (status, response.json()) == run.answered[key], "answered otherwise than before"
        return True
    if is_reused(response):
        assert key in run.answered, f"refused an unknown key {key!r} as reused"
        run.reused += 1
        return False
    if case.method == "POST" and status in (200, 422, 504) and key is not None:
        run.answered[key] = (status, response.json())
    return False


def is_reused(response: Any) -> bool:
    """Whether `response` refuses an Idempotency-Key first used with another body."""
    return (
        response.status_code == 422
        and is_json_error(response)
        and (response.json()["error"]["code"] == "idempotency_key_reused")
    )


def is_json_error(response: Any) -> bool:
    if response.headers.get("content-type", [""])[0].split(";")[0] != "application/json":
        return False
    error = response.json().get("error") if isinstance(response.json(), dict) else None
    return isinstance(error, dict) and {"code", "message"} <= set(error)


# SendGrid carries a bcc-only message (one personalization per recipient) but no cc-only
# one (a personalization needs a `to`): that one goes to the sandbox vendor.
@pytest.mark.parametrize(("field", "vendor"), [("bcc", "primary"), ("cc", "spare")])
def test_a_message_without_to_is_sent(stack: Stack, field: str, vendor: str) -> None:
    before = stack.latest().emulator_accepted
    message = {"from": "app@example.com", field: ["user@example.net"], "subject": "s", "text": "t"}

    response = stack.http.post(f"{stack.url}/v1/messages", json=message, headers=auth(KEY))

    assert (response.status_code, response.json()["vendor"]) == (200, vendor), response.text
    assert stack.latest().emulator_accepted == before + (vendor == "primary")


HTTP_LAYER = {
    "unknown path": ("GET", "/v1/nowhere"),
    "an id with a brace": ("GET", "/v1/messages/%7B"),
    "a method the path does not take": ("DELETE", "/v1/messages"),
    "a request line over 8190 bytes": ("GET", "/v1/messages/" + "x" * 9000),
}


@pytest.mark.parametrize(("method", "path"), HTTP_LAYER.values(), ids=HTTP_LAYER.keys())
def test_the_http_layer_answers_in_json(stack: Stack, method: str, path: str) -> None:
    response = stack.http.request(method, f"{stack.url}{path}", headers=auth(KEY))

    assert 400 <= response.status_code < 500
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    assert set(response.json()["error"]) >= {"code", "message"}


def test_the_run_tried_enough() -> None:
    """The run above is not vacuous: valid messages were sent through both vendors, invalid
    ones refused, and requests without the right key refused."""
    if not run.seen:
        pytest.skip("the run did not take place")
    post = "POST /v1/messages"
    assert run.sent["primary"] >= 30 and run.sent["spare"] >= 5, run.sent
    assert run.seen[(post, "negative", 400)] >= 200, run.seen
    assert run.seen[(post, "positive", 401)] + run.seen[(post, "negative", 401)] >= 20, run.seen


def test_the_listings_are_as_documented(stack: Stack) -> None:
    # No subject: SendGrid cannot carry it, the sandbox vendor takes it.
    body = {"from": "app@example.com", "to": ["user@example.net"], "text": "hi"}
    response, before, after = post(stack, body)
    assert response.status_code == 200, response.text
    assert_sent_once(response.json(), before, after)

    listed = stack.get("/v1/sandbox/{vendor}/messages", vendor="spare")
    health = stack.get("/v1/health")

    assert listed[-1]["vendor_message_id"] == response.json()["vendor_message_id"]
    assert [v["name"] for v in health["vendors"]] == ["primary", "spare"]


SECURED = [
    (path, method.upper())
    for path, operations in OPENAPI["paths"].items()
    for method, operation in operations.items()
    if operation.get("security", OPENAPI["security"])
]
EXAMPLE = OPENAPI["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"][
    "examples"
]["text"]["value"]
PARAMETERS = {"id": "01a23ae40ebc10e4fc4e4d4eedb6", "vendor": "spare"}
WRONG_KEYS = {
    "no key": {},
    "a wrong key": auth("wrong-key"),
    "another scheme": {"Authorization": f"Basic {KEY}"},
    "the key without a scheme": {"Authorization": KEY},
    "an empty bearer": {"Authorization": "Bearer "},
}


@pytest.mark.parametrize("headers", WRONG_KEYS.values(), ids=WRONG_KEYS.keys())
@pytest.mark.parametrize(("path", "method"), SECURED)
def test_every_secured_route_needs_the_key(
    stack: Stack, path: str, method: str, headers: dict[str, str]
) -> None:
    operation = schema[path][method]
    parameters = {p.name: PARAMETERS[p.name] for p in operation.path_parameters}
    body = EXAMPLE if method == "POST" else None
    sent = {"body": body, "media_type": "application/json"} if body is not None else {}
    case = operation.Case(path_parameters=parameters, headers=headers, **sent)
    before = stack.latest()

    response = requests.request(
        method, f"{stack.url}{path.format(**parameters)}", json=body, headers=headers
    )

    assert response.status_code == 401, response.text
    assert stack.latest() == before
    case.validate_response(response, checks=ANSWER_CHECKS)


def post(stack: Stack, body: Any) -> tuple[Any, Latest, Latest]:
    """POST `body` with the key; the answer must be as documented. Returns the answer and
    what the vendors held before and after."""
    case = schema["/v1/messages"]["POST"].Case(body=body, media_type="application/json")
    before = stack.latest()
    response = case.call(base_url=stack.url, session=stack.http, headers=auth(KEY))
    case.validate_response(response, checks=ANSWER_CHECKS)
    return response, before, stack.latest()


# The messages test_openapi.py judges by schema and validator alike, sent for real: what
# the schema and the validator refuse is answered 400 and reaches no vendor.
@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID.keys())
def test_what_the_schema_refuses_reaches_no_vendor(stack: Stack, body: Any) -> None:
    response, before, after = post(stack, body)

    assert response.status_code == 400, response.text
    assert after == before


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_what_the_schema_allows_is_sent(stack: Stack, body: Any) -> None:
    response, before, after = post(stack, body)

    assert response.status_code == 200, response.text
    assert_sent_once(response.json(), before, after)
