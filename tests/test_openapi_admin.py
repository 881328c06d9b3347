"""The admin API against its OpenAPI document, over real sockets.

mailmux runs in-process from a YAML file (sandbox vendors `a` and `b`), with
admin and client keys. Every operation is called with valid and invalid
inputs — no key, a client key, bad JSON, an unknown vendor, a bad kind, a
refused reload — and each answer must be one the document lists for that
operation, with a body its schema allows (jsonschema-rs, the document's
`$ref`s resolved) and the headers it requires. The run must have seen every
documented answer, so a status the server no longer gives fails too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jsonschema_rs
import orjson
import pytest
import yaml
from openapi_spec_validator import validate

from mailmux.app import App
from mailmux.config import load_config
from mailmux.ingress.admin import DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT
from mailmux.ingress.openapi_admin import ADMIN_OPENAPI

ADMIN_KEY = "admin-key-oas-4567"
CLIENT_KEY = "client-key-oas-0123"
DOC = ADMIN_OPENAPI
#: What every guarded call is tried with besides the admin key, and the answer it gets.
INTRUDERS: dict[str, tuple[str | None, int]] = {
    "no key": (None, 401),
    "an unknown key": ("not-a-key", 401),
    "a client key": (CLIENT_KEY, 403),
}
REQUEST = jsonschema_rs.Draft202012Validator(
    {**DOC, "$ref": "#/components/schemas/OverrideRequest"}
)


def settings(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "store": f"sqlite:///{tmp_path / 'mailmux.db'}",
        "node_id": "test-node",
        "api_keys": [CLIENT_KEY],
        "admin_keys": [ADMIN_KEY],
        # Small enough that a body over it is cheap to send (413 is documented).
        "limits": {"max_message_bytes": 10_000, "max_request_bytes": 20_000},
        "reload": {"watch": False},
        "vendors": {
            "a": {"kind": "sandbox", "weight": 50},
            "b": {"kind": "sandbox", "weight": 50},
        },
        **sections,
    }


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **sections: Any) -> AsyncIterator[Node]:
    path = tmp_path / "mailmux.yaml"
    path.write_text(yaml.safe_dump(settings(tmp_path, **sections)))
    app = App(load_config(path), config_path=path)
    await app.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Node(app, path, http)
    finally:
        await app.stop()


def pointer(*parts: str) -> str:
    """A JSON pointer into the document as a URI fragment ('~', '/' escaped, then '{}')."""
    return "#/" + "/".join(quote(p.replace("~", "~0").replace("/", "~1"), safe="~") for p in parts)


def documented(path: str, method: str, status: int) -> tuple[str, dict[str, Any]]:
    """The pointer to the documented answer and the answer itself; fails if undocumented."""
    responses = DOC["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not documented"
    at = pointer("paths", path, method.lower(), "responses", str(status))
    answer = responses[str(status)]
    while "$ref" in answer:
        at = answer["$ref"]
        node: Any = DOC
        for part in at.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        answer = node
    return at, answer


class Node:
    """A running App and a client session to call its admin API with."""

    def __init__(self, app: App, path: Path, http: aiohttp.ClientSession) -> None:
        self.app = app
        self.path = path
        self.http = http
        self.seen: set[tuple[str, str, int]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = ADMIN_KEY,
        json: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        **path_parameters: str,
    ) -> tuple[int, Any]:
        """Call a documented operation; the answer must be as documented. (status, body)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.http.request(
            method,
            self.url + path.format(**path_parameters),
            headers=headers,
            json=json,
            data=data,
            params=params,
        ) as response:
            status, body = response.status, await response.read()
            answer_at, answer = documented(path, method, status)
            assert response.content_type == "application/json", (status, body)
            for name, header in answer.get("headers", {}).items():
                value = response.headers.get(name)
                assert value is not None or not header.get("required"), f"no {name} header"
                if value is not None:
                    assert jsonschema_rs.validator_for(header["schema"]).is_valid(value), value
        parsed = orjson.loads(body)
        schema = jsonschema_rs.Draft202012Validator(
            {**DOC, "$ref": answer_at + "/content/application~1json/schema"}
        )
        errors = [f"{e.instance_path}: {e.message}" for e in schema.iter_errors(parsed)]
        assert not errors, (method, path, status, errors, parsed)
        self.seen.add((path, method, status))
        return status, parsed


def operations() -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in DOC["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def guarded() -> list[tuple[str, str]]:
    return sorted(
        (path, method)
        for path, method in operations()
        if DOC["paths"][path][method.lower()].get("security", DOC["security"])
    )


def test_the_document_is_valid_openapi() -> None:
    validate(DOC)  # type: ignore[arg-type]
    assert DOC["openapi"] == "3.1.0"
    assert DOC["paths"]["/admin/v1/openapi.json"]["get"]["security"] == []
    assert len(guarded()) == len(operations()) - 1, "only the document itself is open"


def test_the_info_states_the_auth_rules() -> None:
    description = DOC["info"]["description"]
    for words in ("admin_keys", "loopback", "client key", "403", "401", "Bearer"):
        assert words in description, words
    (scheme,) = DOC["security"][0]
    assert DOC["components"]["securitySchemes"][scheme] == {
        **DOC["components"]["securitySchemes"][scheme],
        "type": "http",
        "scheme": "bearer",
    }


def test_the_audit_limit_is_documented_as_enforced() -> None:
    (limit,) = DOC["paths"]["/admin/v1/audit"]["get"]["parameters"]
    assert limit["schema"]["default"] == DEFAULT_AUDIT_LIMIT
    assert f"above {MAX_AUDIT_LIMIT} as {MAX_AUDIT_LIMIT}" in limit["description"]


async def test_the_served_routes_are_the_documented_ones(tmp_path: Path) -> None:
    async with running(tmp_path) as node:
        assert node.app._runner is not None
        served = {
            (route.resource.canonical, route.method)
            for route in node.app._runner.app.router.routes()
            if route.resource is not None
            and route.resource.canonical.startswith("/admin/")
            and route.method != "HEAD"  # aiohttp's, beside every GET
        }
        assert served == operations()

        async with node.http.get(f"{node.url}/admin/v1/openapi.json") as response:
            assert response.status == 200  # no key needed, admin_keys or not
            assert await response.json() == DOC


async def test_every_operation_answers_as_documented(tmp_path: Path) -> None:
    async with running(tmp_path) as node:
        for path, method in guarded():
            for key, status in INTRUDERS.values():
                got, body = await node.call(method, path, key=key, vendor="a")
                assert got == status, (path, method, key, body)
        await node.call("GET", "/admin/v1/openapi.json", key=None)

        assert (await node.call("GET", "/admin/v1/status"))[0] == 200
        _, listed = await node.call("GET", "/admin/v1/overrides")
        assert listed == {"overrides": []}
        status, vendors = await node.call(
            "POST",
            "/admin/v1/overrides",
            json={"kind": "weights", "weights": {"a": 0, "b": 100}, "reason": "a is slow"},
        )
        assert status == 201
        assert [(v["name"], v["share"]) for v in vendors["vendors"]] == [("a", 0.0), ("b", 1.0)]
        await node.call("POST", "/admin/v1/overrides", json={"kind": "drain", "vendor": "a"})
        await node.call("POST", "/admin/v1/overrides", json={"kind": "pin", "vendor": "b"})
        _, listed = await node.call("GET", "/admin/v1/overrides")
        assert {o["kind"] for o in listed["overrides"]} == {"weights", "drain", "pin"}
        await node.call("GET", "/admin/v1/vendors")

        for body, code in [
            (b"{", "invalid_json"),
            (b"", "invalid_json"),
            (b"[]", "invalid_override"),
            (b'"drain"', "invalid_override"),
        ]:
            status, answer = await node.call("POST", "/admin/v1/overrides", data=body)
            assert (status, answer["error"]["code"]) == (400, code), body
        status, _ = await node.call("POST", "/admin/v1/overrides", data=b" " * 30_000)
        assert status == 413
        for body in [
            {"kind": "tilt"},
            {"kind": "drain", "vendor": "z"},
            {"kind": "drain", "vendor": "b"},  # a drained and b: nothing left
            {"kind": "drain", "vendor": "a", "for": "\uff11\uff15m"},  # fullwidth digits
        ]:
            status, answer = await node.call("POST", "/admin/v1/overrides", json=body)
            assert (status, answer["error"]["code"]) == (422, "override_refused"), body

        status, answer = await node.call("DELETE", "/admin/v1/overrides/{vendor}", vendor="z")
        assert (status, answer["error"]["code"]) == (422, "override_refused")
        status, answer = await node.call(
            "DELETE", "/admin/v1/overrides/{vendor}", params={"reason": "x" * 1001}, vendor="a"
        )
        assert (status, answer["error"]["code"]) == (400, "invalid_override")
        for vendor in ("a", "b"):
            status, _ = await node.call(
                "DELETE",
                "/admin/v1/overrides/{vendor}",
                params={"reason": "recovered"},
                vendor=vendor,
            )
            assert status == 200
        # One that expires on its own: the audit then has an "expire" event too.
        await node.call(
            "POST", "/admin/v1/overrides", json={"kind": "drain", "vendor": "a", "for": 0.2}
        )
        await asyncio.sleep(0.5)

        _, audit = await node.call("GET", "/admin/v1/audit")
        assert [e["action"] for e in audit["events"]] == [
            *("weights", "drain", "pin", "restore", "restore", "drain", "expire")
        ]
        assert {e["who"] for e in audit["events"]} == {"admin_keys[0]", "mailmux"}
        _, audit = await node.call("GET", "/admin/v1/audit", params={"limit": "0"})
        assert [e["action"] for e in audit["events"]] == ["expire"]
        status, answer = await node.call("GET", "/admin/v1/audit", params={"limit": "x"})
        assert (status, answer["error"]["code"]) == (400, "bad_request")

        status, reloaded = await node.call("POST", "/admin/v1/reload")
        assert (status, reloaded["result"]) == (200, "ok")
        node.path.write_text("vendors: {a: {kind: nowhere}}\n")
        status, refused = await node.call("POST", "/admin/v1/reload")
        assert (status, refused["error"]["code"]) == (422, "invalid_config")
        assert refused["path"] == str(node.path) and refused["errors"]
        _, report = await node.call("GET", "/admin/v1/status")
        assert report["config"]["reload_error"]["errors"] == refused["errors"]

        status, warmup = await node.call("GET", "/admin/v1/warmup")
        assert status == 200 and warmup["schedules"] == []
        route = {"from": "app@shop.example", "to": ["ana@gmail.com"], "class": "otp"}
        status, explained = await node.call("POST", "/admin/v1/route", json=route)
        assert status == 200 and explained["class"]["name"] == "otp", explained
        status, answer = await node.call("POST", "/admin/v1/route", json={"to": 5})
        assert (status, answer["error"]["code"]) == (400, "invalid_message")
        status, answer = await node.call("POST", "/admin/v1/route", data=b"{")
        assert (status, answer["error"]["code"]) == (400, "invalid_json")

        every = {
            (path, method.upper(), int(status))
            for path, item in DOC["paths"].items()
            for method, operation in item.items()
            for status in operation["responses"]
        }
        assert every - node.seen == set(), "documented, yet never answered"


async def test_without_admin_keys_off_loopback_every_route_is_forbidden(tmp_path: Path) -> None:
    async with running(tmp_path, admin_keys=[], listen="0.0.0.0:0") as node:
        for path, method in guarded():
            got, body = await node.call(method, path, key=None, vendor="a")
            assert (got, body["error"]["code"]) == (403, "forbidden"), (path, method)
        status, _ = await node.call("GET", "/admin/v1/openapi.json", key=None)
        assert status == 200


async def test_without_admin_keys_on_loopback_anyone_is_an_operator(tmp_path: Path) -> None:
    async with running(tmp_path, admin_keys=[]) as node:
        body = {"kind": "drain", "vendor": "a", "reason": "test"}
        status, _ = await node.call("POST", "/admin/v1/overrides", key=None, json=body)
        assert status == 201
        _, audit = await node.call("GET", "/admin/v1/audit", key=None)
        assert [e["who"] for e in audit["events"]] == ["anonymous"]


# Request bodies judged by the schema and by mailmux: both must agree.
ACCEPTED: dict[str, Any] = {
    "weights": {"kind": "weights", "weights": {"a": 0, "b": 2.5}},
    "weights, one vendor": {"kind": "weights", "weights": {"a": 10}},
    "drain": {"kind": "drain", "vendor": "a"},
    "drain, hard": {"kind": "drain", "vendor": "a", "hard": True},
    "pin": {"kind": "pin", "vendor": "b", "hard": False},
    "for, seconds": {"kind": "pin", "vendor": "b", "for": 90},
    "for, a fraction": {"kind": "pin", "vendor": "b", "for": 2.5},
    "for, minutes": {"kind": "drain", "vendor": "a", "for": "15m"},
    "for, no unit, blanks": {"kind": "drain", "vendor": "a", "for": " 90 "},
    "for, a fraction of an hour": {"kind": "drain", "vendor": "a", "for": "0.5 h"},
    "for, null": {"kind": "drain", "vendor": "a", "for": None},
    "reason": {"kind": "drain", "vendor": "a", "reason": "a is slow"},
    "reason, null": {"kind": "drain", "vendor": "a", "reason": None},
}
#: Refused by the schema and by mailmux as malformed (400 invalid_override, not 422).
MALFORMED: dict[str, Any] = {
    "an unknown field": {"kind": "drain", "vendor": "a", "note": 1},
    "a field of another kind": {"kind": "weights", "weights": {"a": 1}, "vendor": "a"},
    "hard with weights": {"kind": "weights", "weights": {"a": 1}, "hard": False},
    "reason, a number": {"kind": "drain", "vendor": "a", "reason": 5},
    "reason, too long": {"kind": "pin", "vendor": "b", "reason": "x" * 1001},
}
REFUSED: dict[str, Any] = {
    "no kind": {"vendor": "a"},
    "a bad kind": {"kind": "tilt", "vendor": "a"},
    "weights, none": {"kind": "weights", "weights": {}},
    "weights, not an object": {"kind": "weights", "weights": [["a", 1]]},
    "weights, a string": {"kind": "weights", "weights": {"a": "1"}},
    "weights, a boolean": {"kind": "weights", "weights": {"a": True}},
    "weights, negative": {"kind": "weights", "weights": {"a": -1}},
    "drain, no vendor": {"kind": "drain"},
    "drain, empty vendor": {"kind": "drain", "vendor": ""},
    "drain, vendor not a string": {"kind": "drain", "vendor": 1},
    "drain, hard not a boolean": {"kind": "drain", "vendor": "a", "hard": "yes"},
    "pin, hard": {"kind": "pin", "vendor": "b", "hard": True},
    "for, zero": {"kind": "drain", "vendor": "a", "for": 0},
    "for, negative": {"kind": "drain", "vendor": "a", "for": -5},
    "for, zero minutes": {"kind": "drain", "vendor": "a", "for": "0.0m"},
    "for, a word": {"kind": "drain", "vendor": "a", "for": "soon"},
    "for, an unknown unit": {"kind": "drain", "vendor": "a", "for": "2w"},
    "for, upper case": {"kind": "drain", "vendor": "a", "for": "15M"},
    "for, a boolean": {"kind": "drain", "vendor": "a", "for": True},
}
#: Schema-valid bodies refused for what JSON Schema cannot know (named in the document).
BEYOND_THE_SCHEMA: dict[str, Any] = {
    "an unknown vendor": {"kind": "drain", "vendor": "z"},
    "weights, an unknown vendor": {"kind": "weights", "weights": {"z": 1}},
    "nothing left to route to": {"kind": "weights", "weights": {"a": 0, "b": 0}},
}


@pytest.mark.parametrize("body", ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_what_the_schema_allows_is_applied(tmp_path: Path, body: Any) -> None:
    assert REQUEST.is_valid(body)
    async with running(tmp_path) as node:
        status, answer = await node.call("POST", "/admin/v1/overrides", json=body)
        assert status == 201, answer
        _, listed = await node.call("GET", "/admin/v1/overrides")
        assert {o["kind"] for o in listed["overrides"]} == {body["kind"]}


@pytest.mark.parametrize("body", REFUSED.values(), ids=REFUSED.keys())
async def test_what_the_schema_refuses_is_refused(tmp_path: Path, body: Any) -> None:
    assert not REQUEST.is_valid(body)
    async with running(tmp_path) as node:
        status, answer = await node.call("POST", "/admin/v1/overrides", json=body)
        assert status == 422, answer
        _, listed = await node.call("GET", "/admin/v1/overrides")
        assert listed == {"overrides": []}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_what_the_schema_refuses_as_malformed_is_a_400(tmp_path: Path, body: Any) -> None:
    assert not REQUEST.is_valid(body)
    async with running(tmp_path) as node:
        status, answer = await node.call("POST", "/admin/v1/overrides", json=body)
        assert (status, answer["error"]["code"]) == (400, "invalid_override"), answer
        _, listed = await node.call("GET", "/admin/v1/overrides")
        assert listed == {"overrides": []}


@pytest.mark.parametrize("body", BEYOND_THE_SCHEMA.values(), ids=BEYOND_THE_SCHEMA.keys())
async def test_what_the_schema_cannot_know_is_refused_and_described(
    tmp_path: Path, body: Any
) -> None:
    assert REQUEST.is_valid(body)
    refused = DOC["paths"]["/admin/v1/overrides"]["post"]["responses"]["422"]["description"]
    assert "unknown vendor" in refused and "weight above 0" in refused
    async with running(tmp_path) as node:
        status, answer = await node.call("POST", "/admin/v1/overrides", json=body)
        assert (status, answer["error"]["code"]) == (422, "override_refused")


EXAMPLES = DOC["paths"]["/admin/v1/overrides"]["post"]["requestBody"]["content"][
    "application/json"
]["examples"]


@pytest.mark.parametrize("name", EXAMPLES)
async def test_the_documented_examples_are_applied(tmp_path: Path, name: str) -> None:
    body = EXAMPLES[name]["value"]
    assert REQUEST.is_valid(body)
    async with running(tmp_path) as node:
        status, answer = await node.call("POST", "/admin/v1/overrides", json=body)
        assert status == 201, answer
