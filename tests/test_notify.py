"""Outgoing notifications: the payloads, the `notify:` rules, and webhooks on real sockets.

Receivers are aiohttp servers on 127.0.0.1 that put each request they get in
a queue before answering; a test waits on that queue with a bounded timeout,
never on a sleep. What a target must *not* have received is shown by order:
each target gets its notices in order, so a later notice arriving first
proves the earlier one was never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from fakes import (
    FakeClock,
    ScriptedVendor,
    accepted,
    make_message,
    make_rig,
    opened_store,
    retriable,
)
from shaped_kit import CLIENT_KEY, Router, router

from mailmux import __version__
from mailmux.backoff import Backoff
from mailmux.config import ConfigError, load_config
from mailmux.config_notify import NotifyTarget
from mailmux.control import Control, build_overrides
from mailmux.health import HealthSettings
from mailmux.notices import BACKLOG, Notice, NoticeBoard, NoticeKind
from mailmux.notify import STOP_GRACE, TRIES, Notifier, json_payload, slack_payload
from mailmux.routing import Route

REPO = Path(__file__).resolve().parent.parent
WAIT = 10.0  # seconds a test waits for a request it expects
NODE = "node-1"
HANG = -1  # an answer that never comes (until the receiver stops)

# ---------------------------------------------------------------- notices, as mailmux makes them


async def real_notices(tmp_path: Path) -> dict[NoticeKind, Notice]:
    """One notice of each kind, from the code that publishes them where it exists yet.

    A Deliverer over scripted vendors ejects `a`, probes it and recovers it;
    Control drains `a`. Reloads have no publisher yet: those two are made here.
    """
    wall = FakeClock(1_700_000_000.0)
    async with opened_store(tmp_path / "notices.db", clock=wall) as store:
        a = ScriptedVendor("a", retriable("503 service unavailable"), accepted("esp-a"))
        rig = make_rig(
            store,
            [a, ScriptedVendor("b", then=accepted("esp-b"))],
            wall=wall,
            health_settings=HealthSettings(consecutive_failures=1, base_ejection_seconds=30),
        )
        board = rig.deliverer.notices
        await rig.deliverer.submit(make_message())  # a fails (ejected), b takes it
        rig.monotonic.advance(31)
        await rig.deliverer.submit(make_message())  # the probe to a succeeds
        control = Control((Route("a", 1), Route("b", 1)), store, lambda _: None, wall, board)
        drain = build_overrides({"kind": "drain", "vendor": "a"}, now=wall(), who="admin_keys[0]")
        await control.set(drain, who="admin_keys[0]", reason="a is <slow> & late")
        control.close()
    found = {notice.kind: notice for notice in board.recent()}
    found[NoticeKind.RELOAD] = Notice(wall(), NoticeKind.RELOAD, "config reloaded: 2 changes")
    found[NoticeKind.RELOAD_FAILED] = Notice(
        wall(),
        NoticeKind.RELOAD_FAILED,
        "config refused, the old one stays: vendors.a.weight: must be ≥ 0 (got -1)",
        detail={"errors": ["vendors.a.weight: must be ≥ 0 (got -1)"]},
    )
    assert set(found) == set(NoticeKind)
    return found


async def test_the_json_payload_is_the_notice_with_its_node(tmp_path: Path) -> None:
    for kind, notice in (await real_notices(tmp_path)).items():
        payload = json_payload(notice, NODE)

        assert payload == {**notice.to_json(), "node": NODE, "source": "mailmux"}
        assert payload["kind"] == kind.value
        assert orjson.loads(orjson.dumps(payload)) == payload  # JSON as it stands


async def test_each_json_payload_says_what_happened(tmp_path: Path) -> None:
    notices = await real_notices(tmp_path)
    ejected = json_payload(notices[NoticeKind.EJECTED], NODE)
    override = json_payload(notices[NoticeKind.OVERRIDE], NODE)

    assert ejected["vendor"] == "a"
    assert ejected["detail"]["reason"] == "consecutive_failures"
    assert ejected["detail"]["ejections"] == 1
    assert json_payload(notices[NoticeKind.PROBE], NODE)["vendor"] == "a"
    assert json_payload(notices[NoticeKind.RECOVERED], NODE)["vendor"] == "a"
    assert override["vendor"] == "a"
    assert override["detail"]["action"] == "drain"
    assert override["detail"]["who"] == "admin_keys[0]"
    assert override["detail"]["reason"] == "a is <slow> & late"  # data, not markup: as typed
    assert override["detail"]["split"] == {"a": 0.0, "b": 100.0}


async def test_the_slack_payload_is_one_line_naming_the_node(tmp_path: Path) -> None:
    notices = await real_notices(tmp_path)
    texts = {kind: slack_payload(notice, NODE) for kind, notice in notices.items()}

    for kind, payload in texts.items():
        assert list(payload) == ["text"], kind
        assert payload["text"].startswith(f"[mailmux {NODE}] ")
        assert "\n" not in payload["text"]
    assert texts[NoticeKind.EJECTED]["text"].startswith(
        "[mailmux node-1] a ejected (consecutive_failures): "
    )
    assert texts[NoticeKind.PROBE]["text"] == "[mailmux node-1] a: half-open probe let through"
    assert texts[NoticeKind.RECOVERED]["text"] == (
        "[mailmux node-1] a recovered: traffic fails back"
    )
    assert texts[NoticeKind.RELOAD]["text"] == "[mailmux node-1] config reloaded: 2 changes"
    assert texts[NoticeKind.RELOAD_FAILED]["text"].endswith("must be ≥ 0 (got -1)")


async def test_the_slack_text_escapes_what_slack_would_read_as_markup(tmp_path: Path) -> None:
    text = slack_payload((await real_notices(tmp_path))[NoticeKind.OVERRIDE], NODE)["text"]

    assert text == (
        "[mailmux node-1] drain a by admin_keys[0] (a is &lt;slow&gt; &amp; late); "
        "split a=0% b=100%"
    )


# ---------------------------------------------------------------- the notify: section

VENDORS = {"a": {"kind": "sandbox", "weight": 1}}
SECRET_PATH = "/services/T0AAA/B0BBB/SeCrEtToKeN"


def notify_errors(tmp_path: Path, targets: object) -> list[str]:
    path = tmp_path / "mailmux.yaml"
    path.write_text(yaml.safe_dump({"vendors": VENDORS, "notify": targets}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return caught.value.errors


def test_a_target_needs_only_its_url(tmp_path: Path) -> None:
    path = tmp_path / "mailmux.yaml"
    path.write_text(
        yaml.safe_dump({"vendors": VENDORS, "notify": [{"url": "https://hooks.example.com/x"}]}),
        encoding="utf-8",
    )
    (target,) = load_config(path, env={}).notify

    assert (target.format, target.timeout) == ("json", 5.0)
    assert target.events == (NoticeKind.EJECTED, NoticeKind.RECOVERED, NoticeKind.OVERRIDE)
    assert load_config(None, env={}).notify == ()


@pytest.mark.parametrize(
    ("target", "error"),
    [
        (
            {"url": f"ftp://hooks.slack.com{SECRET_PATH}"},
            "notify[0].url: must be an http:// or https:// URL (got scheme 'ftp')",
        ),
        (
            {"url": f"hooks.slack.com{SECRET_PATH}"},
            "notify[0].url: must be an http:// or https:// URL (got no scheme)",
        ),
        (
            {"url": f"https://{SECRET_PATH}"},
            "notify[0].url: must name a host, e.g. https://hooks.slack.com/services/...",
        ),
        (
            {"url": f"https://hooks.slack.com:99999{SECRET_PATH}"},
            "notify[0].url: must be an http:// or https:// URL with a valid host and port",
        ),
        ({"url": 42}, "notify[0].url: must be a string"),
        ({}, "notify[0].url: required"),
        (
            {"url": "https://h.example/x", "events": ["ejected", "ejection"]},
            "notify[0].events[1]: must be one of ejected, probe, recovered, override, reload, "
            "reload_failed (got 'ejection')",
        ),
        (
            {"url": "https://h.example/x", "events": []},
            "notify[0].events: must list at least one of ejected, probe, recovered, override, "
            "reload, reload_failed",
        ),
        (
            {"url": "https://h.example/x", "format": "teams"},
            "notify[0].format: must be json or slack (got 'teams')",
        ),
        ({"url": "https://h.example/x", "timeout": 0}, "notify[0].timeout: must be > 0 (got 0)"),
        (
            {"url": "https://h.example/x", "timeout": float("nan")},
            "notify[0].timeout: must be a finite number (got nan)",
        ),
        (
            {"url": "https://h.example/x", "event": ["probe"]},
            "notify[0].event: unknown key (did you mean events?)",
        ),
    ],
)
def test_each_target_rule_gives_one_line_without_the_url(
    tmp_path: Path, target: dict[str, Any], error: str
) -> None:
    lines = notify_errors(tmp_path, [target])

    assert lines == [error]
    assert not any("SeCrEt" in line for line in lines)


def test_a_bad_target_is_reported_at_its_index(tmp_path: Path) -> None:
    lines = notify_errors(tmp_path, [{"url": "https://h.example/x"}, {"url": "ws://h.example/"}])

    assert lines == ["notify[1].url: must be an http:// or https:// URL (got scheme 'ws')"]


def test_the_url_is_never_in_a_repr_and_shown_as_scheme_and_host() -> None:
    slack = NotifyTarget(url=f"https://hooks.slack.com{SECRET_PATH}?x=1", format="slack")
    v6 = NotifyTarget(url="http://[::1]:8443/hook")

    assert "SeCrEt" not in repr(slack) and "SeCrEt" not in str(slack)
    assert slack.shown == "https://hooks.slack.com"
    assert v6.shown == "http://[::1]:8443"


def test_the_example_files_commented_targets_load(tmp_path: Path) -> None:
    """mailmux.example.yaml shows `notify: []` and, commented above it, two targets."""
    lines = (REPO / "mailmux.example.yaml").read_text(encoding="utf-8").splitlines()
    start, end = lines.index("# notify:"), lines.index("notify: []")
    block = "\n".join(line.removeprefix("#").removeprefix(" ") for line in lines[start:end])
    path = tmp_path / "mailmux.yaml"
    path.write_text(yaml.safe_dump({"vendors": VENDORS, **yaml.safe_load(block)}), "utf-8")
    config = load_config(path, env={"SLACK_WEBHOOK_URL": f"https://hooks.slack.com{SECRET_PATH}"})

    assert [(t.format, t.shown, t.events, t.timeout) for t in config.notify] == [
        ("json", "https://ops.example.com", config.notify[0].events, 5.0),
        ("slack", "https://hooks.slack.com", config.notify[0].events, 5.0),
    ]
    assert config.notify[0].events == (
        NoticeKind.EJECTED,
        NoticeKind.RECOVERED,
        NoticeKind.OVERRIDE,
    )


# ---------------------------------------------------------------- receivers


@dataclass(frozen=True)
class Received:
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]


class Receiver:
    """A webhook on 127.0.0.1: answers each POST with the next of `answers`, then 200.

    `HANG` holds the request open until the receiver stops. Every request is
    put in `requests` when it arrives, before it is answered.
    """

    def __init__(self, answers: Iterable[int] = ()) -> None:
        self.answers = list(answers)
        self.requests: asyncio.Queue[Received] = asyncio.Queue()
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.requests.put(Received(request.path, dict(request.headers), body))
        answer = self.answers.pop(0) if self.answers else 200
        if answer == HANG:
            await self._release.wait()
            answer = 200
        headers = {"Retry-After": "0.3"} if answer == 429 else {}
        return web.Response(status=answer, text="ok", headers=headers)

    async def next(self, timeout: float = WAIT) -> Received:
        return await asyncio.wait_for(self.requests.get(), timeout)

    async def bodies(self, count: int) -> list[dict[str, Any]]:
        return [(await self.next()).body for _ in range(count)]

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def release(self) -> None:
        """Answer the requests held by HANG, and every later HANG at once (200)."""
        self._release.set()

    async def stop(self) -> None:
        self.release()
        await self._runner.cleanup()


@contextlib.asynccontextmanager
async def receivers(*answers: Iterable[int]) -> AsyncIterator[list[Receiver]]:
    started: list[Receiver] = []
    try:
        for script in answers:
            receiver = Receiver(script)
            await receiver.start()
            started.append(receiver)
        yield started
    finally:
        for receiver in started:
            await receiver.stop()


FAST = Backoff(base_delay=0.01, max_delay=0.05)


@contextlib.asynccontextmanager
async def notifying(
    board: NoticeBoard, targets: Iterable[NotifyTarget], backoff: Backoff = FAST
) -> AsyncIterator[Notifier]:
    notifier = Notifier(board, targets, NODE, backoff=backoff)
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop()


def override(summary: str) -> Notice:
    return Notice(time.time(), NoticeKind.OVERRIDE, summary, "a", {"who": "test"})


def target(receiver: Receiver, path: str = "/hook", **settings: Any) -> NotifyTarget:
    return NotifyTarget.model_validate({"url": receiver.url(path), **settings})


# ---------------------------------------------------------------- a running mailmux


async def admin(mux: Router, method: str, path: str, body: Any = None) -> int:
    """The admin API without a key: loopback and no admin_keys (the caller is `anonymous`)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{mux.url}/admin/v1/{path}", json=body) as answer,
    ):
        return answer.status


async def test_an_override_reaches_the_json_and_the_slack_webhook(tmp_path: Path) -> None:
    async with receivers((), ()) as (generic, slack):
        notify = [
            {"url": generic.url("/hooks/mailmux"), "format": "json"},
            {"url": slack.url(SECRET_PATH), "format": "slack"},
        ]
        async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}, notify=notify) as mux:
            drain = {"kind": "drain", "vendor": "a", "reason": "a is slow"}
            assert await admin(mux, "POST", "overrides", drain) == 201
            json_hook, slack_hook = await generic.next(), await slack.next()
            assert await admin(mux, "DELETE", "overrides/a?reason=fixed") == 200
            # Each target's next request is the restore: the drain was posted once.
            restored = [(await generic.next()).body, (await slack.next()).body]

    assert json_hook.path == "/hooks/mailmux"
    assert json_hook.headers["Content-Type"] == "application/json"
    assert json_hook.headers["User-Agent"] == f"mailmux/{__version__}"
    body = json_hook.body
    assert (body["kind"], body["vendor"], body["node"], body["source"]) == (
        "override",
        "a",
        "test-node",
        "mailmux",
    )
    assert (body["detail"]["action"], body["detail"]["who"]) == ("drain", "anonymous")
    assert body["detail"]["reason"] == "a is slow"
    assert body["detail"]["split"] == {"a": 0.0, "b": 100.0}
    assert slack_hook.path == SECRET_PATH
    assert slack_hook.body == {
        "text": "[mailmux test-node] drain a by anonymous (a is slow); split a=0% b=100%"
    }
    assert restored[0]["detail"]["action"] == "restore"
    assert restored[1]["text"].startswith("[mailmux test-node] restore a by anonymous (fixed)")


class Traffic:
    """One sender posting messages back to back, so Health sees attempts and probes."""

    def __init__(self, mux: Router) -> None:
        self._mux = mux
        self._task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        body = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.post(
                    f"{self._mux.url}/v1/messages", json=body, headers=headers
                ) as answer:
                    assert answer.status == 200, await answer.text()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_ejection_and_failback_are_told_to_the_targets_that_want_them(
    tmp_path: Path,
) -> None:
    health = {"consecutive_failures": 2, "base_ejection_seconds": 0.2, "max_ejection_seconds": 1}
    async with receivers((), ()) as (hook, overrides_only):
        notify = [
            {"url": hook.url()},
            {"url": overrides_only.url(), "events": ["override"]},
        ]
        async with router(
            tmp_path, {"a": "sendgrid", "b": "mailgun"}, health=health, notify=notify
        ) as mux:
            await mux.faults("a", {"down": True})
            traffic = Traffic(mux)
            try:
                ejected = (await hook.next()).body
                await mux.faults("a", {})  # a heals; the next probe succeeds
                after = [(await hook.next()).body]
                while after[-1]["kind"] != "recovered":  # a probe that failed before the heal
                    after.append((await hook.next()).body)
            finally:
                await traffic.stop()
            assert await admin(mux, "POST", "overrides", {"kind": "drain", "vendor": "b"}) == 201
            told = [(await overrides_only.next()).body, (await hook.next()).body]

    assert (ejected["kind"], ejected["vendor"]) == ("ejected", "a")
    assert ejected["detail"]["reason"] == "consecutive_failures"
    assert ejected["summary"].startswith("a ejected (consecutive_failures)")
    # No probe notices: not among the default events.
    assert [(b["kind"], b["vendor"]) for b in after[:-1]] == [("ejected", "a")] * (len(after) - 1)
    assert (after[-1]["vendor"], after[-1]["summary"]) == ("a", "a recovered: traffic fails back")
    # The override-only target's first notice is the drain: no ejection or recovery came before.
    assert [(b["kind"], b["detail"]["action"], b["vendor"]) for b in told] == [
        ("override", "drain", "b"),
        ("override", "drain", "b"),
    ]


async def test_a_hanging_target_delays_neither_the_others_nor_the_stop(tmp_path: Path) -> None:
    async with receivers([HANG], ()) as (hanging, healthy):
        notify = [{"url": hanging.url(), "timeout": 30}, {"url": healthy.url()}]
        async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}, notify=notify) as mux:
            assert await admin(mux, "POST", "overrides", {"kind": "drain", "vendor": "a"}) == 201
            assert await admin(mux, "DELETE", "overrides/a") == 200
            started = time.monotonic()
            told = await healthy.bodies(2)  # both, while the first is still held by `hanging`
            both_in = time.monotonic() - started
            assert (await hanging.next()).body["detail"]["action"] == "drain"
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping
        assert hanging.requests.empty()  # the restore was never sent to it: it was stopping

    assert [b["detail"]["action"] for b in told] == ["drain", "restore"]
    assert both_in < 2.0
    assert STOP_GRACE - 0.5 < stopped_in < STOP_GRACE + 1.5  # waited for the POST, then no more


# ---------------------------------------------------------------- delivery, retries, order


async def test_a_5xx_is_retried_until_the_target_takes_it() -> None:
    board = NoticeBoard()
    async with receivers([500, 503]) as (flaky,), notifying(board, [target(flaky)]):
        board.publish(override("first"))
        board.publish(override("second"))
        got = [body["summary"] for body in await flaky.bodies(4)]

    assert got == ["first", "first", "first", "second"]


async def test_a_429_is_retried_after_its_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    board = NoticeBoard()
    caplog.set_level(logging.WARNING, logger="mailmux.notify")
    async with (
        receivers([429]) as (limited,),
        notifying(board, [target(limited)], backoff=Backoff(0.01, 1.0)),
    ):
        board.publish(override("first"))
        got = [body["summary"] for body in await limited.bodies(2)]

    assert got == ["first", "first"]
    assert caplog.records[0].getMessage().endswith("(HTTP 429); try 2 of 3 in 0.3 s")


async def test_a_notice_is_dropped_after_the_last_try_and_a_4xx_is_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = NoticeBoard()
    caplog.set_level(logging.WARNING, logger="mailmux.notify")
    async with (
        receivers([503] * TRIES, [404]) as (down, gone),
        notifying(board, [target(down, SECRET_PATH), target(gone, SECRET_PATH)]),
    ):
        board.publish(override("first"))
        board.publish(override("second"))
        down_got = [body["summary"] for body in await down.bodies(TRIES + 1)]
        gone_got = [body["summary"] for body in await gone.bodies(2)]

    assert down_got == ["first"] * TRIES + ["second"]
    assert gone_got == ["first", "second"]
    lines = [r.getMessage() for r in caplog.records]
    shown = f"http://127.0.0.1:{down.port}"
    assert f"notify {shown}: override notice not delivered (HTTP 503); try 2 of 3 in" in lines[0]
    assert f"notify {shown}: override notice not delivered (HTTP 503); dropped after 3 tries" in (
        lines
    )
    assert (
        f"notify http://127.0.0.1:{gone.port}: override notice not delivered (HTTP 404); "
        "not retried"
    ) in lines
    assert len(lines) == TRIES + 1  # one line per failed POST
    assert not any("SeCrEt" in line or "first" in line for line in lines)


async def test_a_post_without_an_answer_times_out_and_is_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = NoticeBoard()
    caplog.set_level(logging.WARNING, logger="mailmux.notify")
    async with receivers([HANG]) as (slow,), notifying(board, [target(slow, timeout=0.2)]):
        board.publish(override("first"))
        got = [body["summary"] for body in await slow.bodies(2)]

    assert got == ["first", "first"]
    assert "(no answer within 0.2 s); try 2 of 3" in caplog.records[0].getMessage()


class Heard(logging.Handler):
    """mailmux.notify's log lines; `done` is set by the first that contains `until`."""

    def __init__(self, until: str) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.done = asyncio.Event()
        self._until = until

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if self._until in self.lines[-1]:
            self.done.set()


@contextlib.contextmanager
def heard(until: str) -> Iterator[Heard]:
    handler = Heard(until)
    logger = logging.getLogger("mailmux.notify")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_a_target_that_refuses_connections_holds_back_no_other() -> None:
    board = NoticeBoard()
    async with receivers(()) as (closed,):
        pass  # stopped: its port refuses connections now
    async with receivers(()) as (up,):
        with heard(until="dropped after") as log:
            async with notifying(board, [target(closed, SECRET_PATH), target(up)]):
                board.publish(override("first"))
                assert (await up.next()).body["summary"] == "first"
                await asyncio.wait_for(log.done.wait(), WAIT)

    shown = f"notify http://127.0.0.1:{closed.port}: override notice not delivered (Cannot connect"
    assert len(log.lines) == TRIES
    assert all(line.startswith(shown) for line in log.lines)
    assert not any("SeCrEt" in line for line in log.lines)


async def test_only_the_kinds_a_target_lists_are_posted() -> None:
    board = NoticeBoard()
    async with (
        receivers(()) as (hook,),
        notifying(board, [target(hook, events=["probe", "reload_failed"])]),
    ):
        for kind in NoticeKind:
            board.publish(Notice(time.time(), kind, f"a {kind.value}", "a"))
        got = [body["kind"] for body in await hook.bodies(2)]
        board.publish(Notice(time.time(), NoticeKind.PROBE, "last", "a"))
        last = (await hook.next()).body["summary"]

    assert got == ["probe", "reload_failed"]
    assert last == "last"


async def test_a_notice_that_cannot_be_encoded_costs_only_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = NoticeBoard()
    async with receivers(()) as (hook,), notifying(board, [target(hook)]):
        board.publish(Notice(time.time(), NoticeKind.OVERRIDE, "bad", "a", {"x": object()}))
        board.publish(override("good"))
        got = (await hook.next()).body["summary"]

    assert got == "good"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", f"notify http://127.0.0.1:{hook.port}: override notice failed")
    ]


async def test_a_target_that_lags_loses_its_oldest_notices_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = NoticeBoard()
    caplog.set_level(logging.WARNING, logger="mailmux.notify")
    async with receivers([HANG]) as (hook,), notifying(board, [target(hook, timeout=30)]):
        board.publish(override("n0"))
        assert (await hook.next()).body["summary"] == "n0"  # held: the sender waits
        for n in range(1, BACKLOG + 6):
            board.publish(override(f"n{n}"))
        hook.release()
        after = (await hook.next()).body["summary"]

    assert after == "n6"  # n1 … n5 were dropped, the newest BACKLOG kept
    assert [r.getMessage() for r in caplog.records][:1] == [
        f"notify http://127.0.0.1:{hook.port}: 5 notices lost (the oldest), "
        "this target fell too far behind"
    ]


async def test_an_update_adds_and_removes_targets() -> None:
    board = NoticeBoard()
    async with receivers((), ()) as (old, new):
        notifier = Notifier(board, [], NODE, backoff=FAST)
        await notifier.start()
        try:
            board.publish(override("nobody hears this"))
            notifier.update([target(old)])
            board.publish(override("n1"))
            assert (await old.next()).body["summary"] == "n1"
            notifier.update([target(old), target(new)])
            board.publish(override("n2"))
            assert [(await r.next()).body["summary"] for r in (old, new)] == ["n2", "n2"]
            notifier.update([target(new), target(new)])  # `old` removed; equal targets are one
            board.publish(override("n3"))
            assert (await new.next()).body["summary"] == "n3"
            assert notifier.targets == (target(new),)
        finally:
            await notifier.stop()  # waits for POSTs under way: one to `old` would have arrived
        assert old.requests.empty()
        assert new.requests.empty()
