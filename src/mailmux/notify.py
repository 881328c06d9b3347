"""Outgoing notifications: the notices each `notify:` target wants, POSTed to its webhook.

An operator should hear that a vendor was ejected, that traffic failed back,
or that someone drained a vendor, where they already look (a chat channel,
an incident tool), without scraping metrics. The `NoticeBoard` already has
every such moment; the `Notifier` forwards them:

- One sender task and one `Subscription` per target, so a slow or dead
  target holds back no other, and each target gets its notices in the order
  they happened. A target that falls more than `notices.BACKLOG` behind loses
  its oldest notices (the Subscription drops them) and the loss is logged.
- A POST is bounded by the target's `timeout`. A connection error, a
  timeout, a 5xx or a 429 is tried again, `TRIES` tries in all with jittered
  back-off (a 429's Retry-After is a floor), then the notice is dropped: a
  notification that arrives minutes late misleads more than it helps. Any
  other answer that is not 2xx (a 4xx: a revoked or mistyped webhook) is
  not retried, since the same request would get the same answer.
- Each failure is one warning line with the target's scheme and host only:
  a Slack webhook URL's path is its credential, and a body may name
  vendors and reasons that belong in the channel, not in a shared log.
- Publishing never waits on a sender, so nothing on the message path changes.

`json_payload` and `slack_payload` are pure: the I/O is `Notifier` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import aiohttp
import orjson

from mailmux import __version__
from mailmux.backoff import Backoff
from mailmux.config_notify import NotifyFormat, NotifyTarget
from mailmux.notices import Notice, NoticeBoard
from mailmux.routing import RandomSource

log = logging.getLogger("mailmux.notify")

#: POSTs per notice at most (the first and two retries).
TRIES = 3
#: Between tries: full jitter over 0.5 s, then over 1 s; a 429's Retry-After is a floor,
#: capped at 4 s. With the default 5 s timeout a notice is delivered or dropped within
#: 16.5 s (23 s when 429s ask for the most), so a late notice is never very late.
RETRY_BACKOFF = Backoff(base_delay=0.5, max_delay=4.0)
#: How long `stop` waits for POSTs under way before cancelling them.
STOP_GRACE = 2.0

_HEADERS = MappingProxyType(
    {"Content-Type": "application/json", "User-Agent": f"mailmux/{__version__}"}
)


def json_payload(notice: Notice, node: str) -> dict[str, Any]:
    """The generic webhook's body: the notice as data, and which mailmux node saw it."""
    return {**notice.to_json(), "node": node, "source": "mailmux"}


def slack_payload(notice: Notice, node: str) -> dict[str, Any]:
    """A Slack incoming-webhook body (Mattermost and Rocket.Chat take it too): one line.

    `&`, `<` and `>` are escaped as Slack asks, so a reason an operator typed
    cannot become a link or a mention.
    """
    line = f"[mailmux {node}] {notice.summary}"
    return {"text": line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")}


PAYLOADS: Mapping[NotifyFormat, Callable[[Notice, str], dict[str, Any]]] = MappingProxyType(
    {"json": json_payload, "slack": slack_payload}
)


@dataclass(frozen=True, slots=True)
class _Answer:
    """How one POST went: `problem` None means the target took the notice."""

    problem: str | None = None
    retry: bool = False
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (the back-off applies)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _error(err: aiohttp.ClientError) -> str:
    """A client error in words without the URL: an OS-level error names the host only, while
    some others (a ClientResponseError) would print the whole URL, so they get their name."""
    return str(err) if isinstance(err, OSError) else type(err).__name__


class _Sender:
    """One target: its own subscription, and one task posting its notices in order."""

    def __init__(
        self,
        target: NotifyTarget,
        board: NoticeBoard,
        session: aiohttp.ClientSession,
        node: str,
        backoff: Backoff,
        rng: RandomSource,
    ) -> None:
        self.target = target
        self._session = session
        self._node = node
        self._backoff = backoff
        self._rng = rng
        self._stack = contextlib.ExitStack()
        # Subscribed before the task first runs, so no notice published meanwhile is missed.
        self._subscription = self._stack.enter_context(board.subscribe())
        self._reported = 0  # of subscription.dropped, already logged
        self._posting = False
        self._closing = False
        self.task = asyncio.create_task(self._run(), name=f"mailmux-notify {target.shown}")
        self.task.add_done_callback(lambda _: self._stack.close())

    def close(self) -> None:
        """Send nothing new: end now when idle, else once the POST under way returns."""
        self._closing = True
        self._stack.close()
        if not self._posting:
            self.task.cancel()

    async def _run(self) -> None:
        while not self._closing:
            notice = await self._subscription.get()
            self._report_loss()
            if notice.kind not in self.target.events:
                continue
            try:
                await self._deliver(notice)
            except Exception:  # a bug must cost one notice, not every later one
                log.exception("notify %s: %s notice failed", self.target.shown, notice.kind)

    def _report_loss(self) -> None:
        dropped = self._subscription.dropped
        if dropped > self._reported:
            log.warning(
                "notify %s: %d notices lost (the oldest), this target fell too far behind",
                self.target.shown,
                dropped - self._reported,
            )
            self._reported = dropped

    async def _deliver(self, notice: Notice) -> None:
        body = orjson.dumps(PAYLOADS[self.target.format](notice, self._node))
        for attempt in range(1, TRIES + 1):
            self._posting = True
            try:
                answer = await self._post(body)
            finally:
                self._posting = False
            if answer.problem is None:
                return
            if not answer.retry or attempt == TRIES or self._closing:
                outcome = (
                    "not retried"
                    if not answer.retry
                    else "sending stopped"
                    if self._closing
                    else f"dropped after {TRIES} tries"
                )
                log.warning(
                    "notify %s: %s notice not delivered (%s); %s",
                    self.target.shown,
                    notice.kind,
                    answer.problem,
                    outcome,
                )
                return
            delay = self._backoff.delay(attempt, self._rng, answer.retry_after)
            log.warning(
                "notify %s: %s notice not delivered (%s); try %d of %d in %.1f s",
                self.target.shown,
                notice.kind,
                answer.problem,
                attempt + 1,
                TRIES,
                delay,
            )
            await asyncio.sleep(delay)

    async def _post(self, body: bytes) -> _Answer:
        timeout = self.target.timeout
        try:
            async with self._session.post(
                self.target.url,
                data=body,
                headers=_HEADERS,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,  # a webhook that moved is a config to fix, not to follow
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            return _Answer(f"no answer within {timeout:g} s", retry=True)
        except aiohttp.ClientError as err:
            return _Answer(_error(err), retry=True)
        if 200 <= status < 300:
            return _Answer()
        return _Answer(f"HTTP {status}", status >= 500 or status == 429, retry_after)


class Notifier:
    """Posts the notices of one `NoticeBoard` to the configured targets; see the module doc."""

    def __init__(
        self,
        board: NoticeBoard,
        targets: Iterable[NotifyTarget],
        node: str,
        *,
        backoff: Backoff = RETRY_BACKOFF,
        rng: RandomSource | None = None,
        grace: float = STOP_GRACE,
    ) -> None:
        self._board = board
        self._node = node
        self._backoff = backoff
        self._rng: RandomSource = rng or random.Random()
        self._grace = grace
        self._targets = tuple(dict.fromkeys(targets))
        self._senders: dict[NotifyTarget, _Sender] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # removed targets' too, until they end
        self._session: aiohttp.ClientSession | None = None
        self._running = False

    @property
    def targets(self) -> tuple[NotifyTarget, ...]:
        return self._targets

    async def start(self) -> None:
        """Post every notice published from now on to the targets that want it."""
        self._running = True
        self.update(self._targets)

    def update(self, targets: Iterable[NotifyTarget]) -> None:
        """Post to `targets` from now on (a config reload), all at once.

        A target in both the old and the new set keeps its sender and the
        notices waiting in it; a removed one sends nothing new (a POST under
        way may finish); an added one hears what is published from now on.
        Equal targets are one: the same notice is not posted twice to a URL.
        """
        self._targets = tuple(dict.fromkeys(targets))
        if not self._running:
            return
        wanted = set(self._targets)
        for target in [t for t in self._senders if t not in wanted]:
            self._senders.pop(target).close()
        for target in self._targets:
            if target not in self._senders:
                self._senders[target] = self._spawn(target)

    def _spawn(self, target: NotifyTarget) -> _Sender:
        if self._session is None:  # one pool for every target, opened for the first one
            self._session = aiohttp.ClientSession()
        sender = _Sender(target, self._board, self._session, self._node, self._backoff, self._rng)
        self._tasks.add(sender.task)
        sender.task.add_done_callback(self._tasks.discard)
        return sender

    async def stop(self) -> None:
        """Send nothing new; give POSTs under way `grace` seconds, then close the pool."""
        self._running = False
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
