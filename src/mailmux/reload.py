"""Hot reload: read the config file again, validate it whole, and swap it in or refuse it.

Three triggers end here: SIGHUP, `POST /admin/v1/reload` and a change of
the file on disk (watchfiles, `reload.watch`). Each reads the file the node
started from, with the `MAILMUX_…` variables applied as at start (they keep
precedence over the file), and validates all of it before anything changes.

- Valid: the App swaps it in (`apply`) in one step on the event loop, so a
  message is planned either wholly on the old config or wholly on the new
  one; rounds already under way finish with the vendors they started with.
- Invalid: every error is logged with the file's path, kept for
  `mailmux vendors` and the dashboard (`state()["reload_error"]`), and
  published as a notice; the old config keeps routing. The error stays
  shown until a reload succeeds.

Reloads run one at a time. A change on disk that leaves the file's bytes as
they were (an editor's touch) reloads nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailmux.config import Config, ConfigError, load_config
from mailmux.config_diff import ConfigChange
from mailmux.metrics import Recorder
from mailmux.notices import Notice, NoticeBoard, NoticeKind

log = logging.getLogger("mailmux.reload")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    path: str | None
    trigger: str  # "signal", "api", "watch"
    change: ConfigChange | None = None  # what a valid file changed
    errors: list[str] = field(default_factory=list)  # why a file was refused

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"result": "ok" if self.ok else "invalid", "path": self.path}
        if self.change is not None:
            body["changes"] = self.change.to_json()
            body["summary"] = self.change.summary()
        if self.errors:
            body["errors"] = self.errors
        return body


class Reloader:
    """Reloads one node's config file; `apply` swaps a valid config in or raises ConfigError."""

    def __init__(
        self,
        path: Path | None,
        apply: Callable[[Config], ConfigChange],
        *,
        metrics: Recorder,
        notices: NoticeBoard,
        clock: Callable[[], float],
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.path = path
        self._apply = apply
        self._metrics = metrics
        self._notices = notices
        self._clock = clock
        self._env = dict(env)  # as at start: the variables keep their precedence
        self._lock = asyncio.Lock()
        self.loaded_at = clock()
        self._digest = _digest(path)
        self.error: dict[str, Any] | None = None  # the latest refusal, until a reload succeeds
        #: Set once the watch on the file is in place (a change before it goes unseen).
        self.watching = asyncio.Event()

    def state(self) -> dict[str, Any]:
        """For the admin API and the dashboard: the file, when it was loaded, a refusal."""
        return {
            "path": None if self.path is None else os.fspath(self.path),
            "loaded_at": self.loaded_at,
            "reload_error": self.error,
        }

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            return await self._reload(trigger)

    async def _reload(self, trigger: str) -> ReloadResult:
        if self.path is None:
            return self._refuse(
                trigger,
                [
                    "mailmux runs on its embedded default: there is no config file to reload; "
                    "start it with --config FILE (or ./mailmux.yaml)"
                ],
            )
        shown = os.fspath(self.path)
        try:
            config = await asyncio.to_thread(load_config, self.path, self._env)
            change = self._apply(config)
        except ConfigError as err:
            return self._refuse(trigger, err.errors)
        self._digest = _digest(self.path)
        self.loaded_at = self._clock()
        self.error = None
        self._metrics.config_reload("ok")
        summary = change.summary()
        log.info("config %s reloaded (%s): %s", shown, trigger, summary)
        if change.restart_needed:
            log.warning(
                "config %s: %s changed; a restart applies it",
                shown,
                ", ".join(change.restart_needed),
            )
        self._notices.publish(
            Notice(
                self.loaded_at,
                NoticeKind.RELOAD,
                f"config reloaded: {summary}",
                detail={"path": shown, "trigger": trigger, **change.to_json()},
            )
        )
        return ReloadResult(True, shown, trigger, change)

    def _refuse(self, trigger: str, errors: list[str]) -> ReloadResult:
        shown = None if self.path is None else os.fspath(self.path)
        now = self._clock()
        self.error = {"at": now, "path": shown, "trigger": trigger, "errors": list(errors)}
        self._metrics.config_reload("invalid")
        log.error(
            "config %s refused (%s), the running config stays: %d error(s)",
            shown,
            trigger,
            len(errors),
        )
        for line in errors:
            log.error("config %s: %s", shown, line)
        self._notices.publish(
            Notice(
                now,
                NoticeKind.RELOAD_FAILED,
                f"config {shown} refused: {errors[0]}"
                + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                detail={"path": shown, "trigger": trigger, "errors": list(errors)},
            )
        )
        return ReloadResult(False, shown, trigger, errors=list(errors))

    async def watch(self) -> None:
        """Reload whenever the file's bytes change, until cancelled.

        The directory is watched, not the file: editors and config managers
        replace a file by renaming a new one over it, which a watch on the
        old file would miss.
        """
        from watchfiles import awatch

        if self.path is None:
            return
        target = self.path.resolve()
        async for changes in awatch(
            target.parent,
            watch_filter=lambda _, name: Path(name).resolve() == target,
            debounce=200,
            recursive=False,
            rust_timeout=1000,
            yield_on_timeout=True,  # the first (empty) yield says the watch is in place
        ):
            self.watching.set()
            if changes and _digest(self.path) != self._digest:
                await self.reload("watch")


def _digest(path: Path | None) -> bytes | None:
    """The file's content hash (None when it cannot be read: the reload will say why)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
