"""Builds mailmux from its configuration and runs the API server and the Retrier."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from mailmux.backoff import Backoff
from mailmux.capacity import Capacity
from mailmux.classes import ClassBook
from mailmux.config import Config, ConfigError
from mailmux.config_diff import RESTART_ONLY, RESTART_ONLY_RETRY, ConfigChange, diff
from mailmux.config_values import split_listen
from mailmux.control import Control
from mailmux.delivery import Deliverer, DeliveryPolicy
from mailmux.explain import explain
from mailmux.health import Health, HealthSettings
from mailmux.idempotency import IdempotencyGuard
from mailmux.ingress.admin import AdminApi, AdminContext
from mailmux.ingress.api import ApiContext
from mailmux.ingress.apps import build_api_app, build_shape_app
from mailmux.ingress.clients import ClientKeys
from mailmux.ingress.dashboard import Dashboard, DashboardContext
from mailmux.ingress.listener import Listener, fit_file_limit
from mailmux.ingress.server import ServerLimits
from mailmux.ingress.smtp_server import SmtpServer, SmtpSettings
from mailmux.limiter import limits_from
from mailmux.message import Message, MessageLimits
from mailmux.metrics import NO_METRICS, Metrics, Recorder
from mailmux.notices import NoticeBoard
from mailmux.notify import Notifier
from mailmux.overrides import OverrideRefused
from mailmux.reload import Reloader
from mailmux.retry import Retrier, RetrierSettings
from mailmux.routing import Availability, Route
from mailmux.rules import Rules
from mailmux.spool import open_store
from mailmux.status import build_status
from mailmux.steering import Steering
from mailmux.traffic import TrafficHistory
from mailmux.usage_writer import UsageWriter
from mailmux.vendors.base import Vendor
from mailmux.vendors.registry import build_vendor
from mailmux.vendors.sandbox import SandboxVendor
from mailmux.vendors.shapes import SHAPES
from mailmux.warmup import DailyUsage, schedules_from, warmup_status

log = logging.getLogger("mailmux")


def routes_from_config(config: Config) -> tuple[Route, ...]:
    return tuple(
        Route(vendor=name, weight=float(v.weight), fallback=v.fallback)
        for name, v in config.vendors.items()
    )


def health_settings(config: Config) -> HealthSettings:
    h = config.health
    return HealthSettings(
        consecutive_failures=h.consecutive_failures,
        window_seconds=h.window_seconds,
        min_requests=h.min_requests,
        failure_rate=h.failure_rate,
        latency_p90_seconds=h.latency_p90_seconds,
        base_ejection_seconds=h.base_ejection_seconds,
        max_ejection_seconds=h.max_ejection_seconds,
    )


def delivery_policy(config: Config) -> DeliveryPolicy:
    return DeliveryPolicy(
        attempt_timeout=config.delivery.attempt_timeout,
        vendor_timeouts={
            name: v.attempt_timeout
            for name, v in config.vendors.items()
            if v.attempt_timeout is not None
        },
        max_age=config.retry.max_age,
    )


def longest_attempt(config: Config) -> float:
    """The longest one attempt may take under `config`."""
    return max(
        [config.delivery.attempt_timeout]
        + [v.attempt_timeout for v in config.vendors.values() if v.attempt_timeout]
    )


class App:
    """One mailmux node: store, vendors, health, Deliverer, Retrier and the HTTP API."""

    def __init__(
        self,
        config: Config,
        *,
        rng: random.Random | None = None,
        config_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.store = open_store(
            config.store, idempotency_retention=config.idempotency.retention_seconds
        )
        self.vendors: dict[str, Vendor] = {
            name: build_vendor(name, vc) for name, vc in config.vendors.items()
        }
        self.health = Health(self.vendors, health_settings(config))
        #: Today's messages per vendor (warm-up caps, daily quotas), written behind to the store.
        self.usage = DailyUsage()
        self.usage_writer = UsageWriter(self.usage, self.store)
        self._usage_task: asyncio.Task[None] | None = None
        #: Rate limits, quotas and warm-up schedules over `usage`.
        self.capacity = Capacity.from_config(config, self.usage)
        self.routes = routes_from_config(config)
        self.classes = ClassBook.from_config(config)
        self.rules = Rules.from_config(config)
        #: Ejections, probes, recoveries, overrides and reloads, for the dashboard and webhooks.
        self.notices = NoticeBoard()
        #: Posts notices to `notify:` targets; without targets it holds no session and no task,
        #: and exists anyway so that a reload can add the first target (`update`).
        self.notifier = Notifier(self.notices, config.notify, config.node_id)
        #: Accepted messages per vendor per second, for the dashboard's chart.
        self.traffic = TrafficHistory(self.vendors)
        self.metrics: Recorder = NO_METRICS
        if config.metrics.enabled:
            self.metrics = Metrics(
                list(self.vendors),
                list(SHAPES),
                health=self.health,
                routes=lambda: self.deliverer.routes,
            )
        r = config.retry
        self.deliverer = Deliverer(
            vendors=self.vendors,
            routes=self.routes,
            health=self.health,
            store=self.store,
            policy=delivery_policy(config),
            backoff=Backoff(base_delay=r.base_delay, max_delay=r.max_delay),
            rng=self.rng,
            metrics=self.metrics,
            notices=self.notices,
            traffic=self.traffic,
            steering=Steering(self.classes, self.rules, self.routes),
            capacity=self.capacity,
            on_spooled=self._spooled,
            on_recovered=self._recovered,
        )
        self.retrier = Retrier(
            self.deliverer,
            self.store,
            RetrierSettings(
                poll_interval=r.poll_interval,
                lease_seconds=r.lease_seconds,
                batch_size=r.batch_size,
                concurrency=r.concurrency,
                reserved=r.reserved_slots,
            ),
            owner=config.node_id,
            # Read at every look: a reload swaps self.classes.
            lowest_priority=lambda: self.classes.lowest_priority,
            pace=self._pace,
        )
        self.keys = ClientKeys(config.api_keys, {n: c.key for n, c in config.clients.items()})
        self.control = Control(self.routes, self.store, self._route, time.time, self.notices)
        self.reloader = Reloader(
            None if config_path is None else Path(config_path),
            self._swap,
            metrics=self.metrics,
            notices=self.notices,
            clock=time.time,
        )
        self._watch_task: asyncio.Task[None] | None = None
        #: Vendors a reload removed or replaced, closed once their attempts are over.
        self._retired: list[Vendor] = []
        self._retiring: set[asyncio.Task[None]] = set()
        #: Making the backlog due after a vendor recovered (`_recovered`).
        self._releasing: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        #: Shapes with a listener of their own, each with its runner and listener.
        self._shape_listeners: list[tuple[web.AppRunner, Listener]] = []
        #: Shape name → the port its own listener bound (for `listen: ...:0`).
        self.shape_ports: dict[str, int] = {}
        self._retrier_task: asyncio.Task[None] | None = None
        self.port: int | None = None
        self._smtp: SmtpServer | None = None
        #: The ports the SMTP listeners bound (`smtp.listen`, `smtp.listen_tls`), once started.
        self.smtp_port: int | None = None
        self.smtp_tls_port: int | None = None

    async def status(self) -> dict[str, Any]:
        kinds = {name: vendor.kind for name, vendor in self.vendors.items()}
        counts = await self.store.count_by_state()
        return build_status(self.routes, kinds, self.health, counts, self.deliverer.last_errors)

    def warmup(self) -> dict[str, Any]:
        """Today's UTC day and each configured warm-up schedule on it (`mailmux warmup`)."""
        return {
            "day": self.usage.today().isoformat(),
            "schedules": warmup_status(self.capacity.schedules, self.usage),
        }

    def _swap(self, new: Config) -> ConfigChange:
        """Swap a valid config in, all at once (no await): the next message sees all of it.

        Raises ConfigError, changing nothing, when the overrides in force
        would leave the new config nothing to route to.
        """
        change = diff(self.config, new)
        old = self.config
        kept: dict[str, Any] = {n: getattr(old, n) for n in RESTART_ONLY}
        kept["retry"] = new.retry.model_copy(
            update={n: getattr(old.retry, n) for n in RESTART_ONLY_RETRY}
        )
        new = new.model_copy(update=kept)  # what a restart alone applies stays as it runs
        lease = new.retry.lease_seconds
        if longest_attempt(new) >= lease:
            raise ConfigError(
                [
                    f"retry.lease_seconds: an attempt timeout of {longest_attempt(new):g}s needs "
                    f"a lease above it; the running lease is {lease:g}s and changes on a restart"
                ]
            )
        exposed = new.exposed()
        if exposed and not new.client_keys:
            raise ConfigError(
                [
                    f"api_keys, clients: {'; '.join(exposed)} is not a loopback address, so "
                    "client keys may not all be removed"
                ]
            )
        routes = routes_from_config(new)
        keep = {n: v for n, v in self.vendors.items() if n in new.vendors}
        fresh = set(change.added) | set(change.replaced)
        try:
            built = {n: build_vendor(n, new.vendors[n]) for n in new.vendors if n in fresh}
        except ValueError as err:
            raise ConfigError([f"vendors: {err}"]) from None
        try:
            self.control.check_reconfigure(routes)
        except OverrideRefused as err:
            for vendor in built.values():
                self._retire(vendor, 0.0)
            raise ConfigError([f"with the overrides in force: {err}"]) from None
        vendors = {n: built.get(n) or keep[n] for n in new.vendors}
        gone = [v for n, v in self.vendors.items() if n not in vendors or n in built]
        self.metrics.add_vendors(change.added)
        self.health.reconcile(vendors, fresh=change.replaced, settings=health_settings(new))
        self.traffic.reconcile(vendors)
        for name in change.removed:
            self.deliverer.last_errors.pop(name, None)
        self.vendors = vendors
        self.deliverer.vendors = vendors
        self.deliverer.policy = delivery_policy(new)
        self.deliverer.backoff = Backoff(
            base_delay=new.retry.base_delay, max_delay=new.retry.max_delay
        )
        self.capacity.reconcile(limits_from(new.vendors), schedules_from(new.vendors))
        self.classes = ClassBook.from_config(new)
        self.rules = Rules.from_config(new)
        self.control.reconfigure(routes)  # sets the routes and the steering
        self.keys.update(new.api_keys, {n: c.key for n, c in new.clients.items()})
        self.notifier.update(new.notify)
        self.config = new
        for vendor in gone:
            self._retire(vendor, longest_attempt(old) + 1.0)
        return change

    def _pace(self) -> float:
        """Seconds until a vendor the spool's mail can go to has room for a retried message.

        Vendors drained, or ejected while another is up, are not counted: their
        room would only start retries that wait again.
        """
        eligible = [r.vendor for r in self.routes if not r.drained and (r.weight > 0 or r.fallback)]
        availability = self.health.availability()
        up = [v for v in eligible if availability.get(v) is not Availability.EJECTED]
        return self.capacity.wait_time(up or eligible, urgent=False)

    def _spooled(self, due: float) -> None:
        self.retrier.wake(due)

    def _recovered(self, vendor: str) -> None:
        """A vendor is back: the spool's backlog is due now, at the pace the limits allow."""

        async def release() -> None:
            made = await self.store.make_due(time.time())
            if made:
                log.info("%s recovered: %d queued messages are due now", vendor, made)
            self.retrier.wake()

        task = asyncio.get_running_loop().create_task(release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def _retire(self, vendor: Vendor, after: float) -> None:
        """Close `vendor` once the attempts it may still be making are over."""
        self._retired.append(vendor)

        async def close() -> None:
            await asyncio.sleep(after)
            self._retired.remove(vendor)
            await vendor.close()

        task = asyncio.get_running_loop().create_task(close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _route(self, routes: tuple[Route, ...]) -> None:
        """Overrides or config changed: the next message is steered by them (assignments only)."""
        self.routes = routes
        self.deliverer.routes = routes
        self.deliverer.steering = Steering(
            self.classes, self.rules, self.control.config_routes, self.control.active(), time.time()
        )

    def _admin(self, ctx: ApiContext) -> AdminApi:
        return AdminApi(
            AdminContext(
                control=self.control,
                status=self.status,
                admin_keys=lambda: self.config.admin_keys,
                config=self.reloader.state,
                reload=self.reloader.reload,
                client_keys=ctx.keys,
                loopback=self.config.is_loopback,
                clock=ctx.clock,
                explain=self._explain,
                warmup=self.warmup,
            )
        )

    def _explain(self, message: Message) -> dict[str, Any]:
        """The plan `message` would get now: this config's rules and classes, the
        overrides in force, the health of each vendor (for `mailmux route`)."""
        return explain(
            message,
            rules=self.rules,
            book=self.classes,
            config_routes=self.control.config_routes,
            overrides=self.control.active(),
            now=time.time(),
            availability=self.health.availability(),
            full=lambda urgent: self.capacity.full(urgent=urgent),
            capped=self.capacity.capped(),
            warm=self.capacity.warm,
        )

    def _context(self) -> ApiContext:
        lim = self.config.limits
        return ApiContext(
            deliverer=self.deliverer,
            guard=IdempotencyGuard(self.store, retention=self.config.idempotency.retention_seconds),
            store=self.store,
            limits=MessageLimits(
                max_message_bytes=lim.max_message_bytes,
                max_attachment_bytes=lim.max_attachment_bytes,
                max_recipients=lim.max_recipients,
            ),
            keys=self.keys,
            status=self.status,
            sandboxes={n: v for n, v in self.vendors.items() if isinstance(v, SandboxVendor)},
            clock=time.time,
            metrics=self.metrics,
        )

    async def start(self) -> None:
        await self.store.open()
        await self.notifier.start()  # before load, so an override expired meanwhile is told
        await self.control.load()
        await self.usage_writer.load()
        self._usage_task = asyncio.create_task(self.usage_writer.run(), name="mailmux-usage")
        self._retrier_task = asyncio.create_task(self.retrier.run(), name="mailmux-retrier")
        ctx = self._context()
        lim = self.config.limits
        shapes = self.config.ingress.enabled()
        admin = self._admin(ctx)
        dashboard = Dashboard(
            DashboardContext(
                self.traffic, self.notices, self.status, self.store.queue_summary, admin
            )
        )
        main = build_api_app(
            ctx, lim.max_request_bytes, [SHAPES[name] for name in shapes], admin, dashboard
        )
        self._runner = web.AppRunner(main, access_log=None, handle_signals=False)
        await self._runner.setup()
        files = fit_file_limit(lim.max_connections)
        if files is not None:
            log.warning(
                "limits.max_connections is %d but this process may open only %d files: "
                "connections beyond that fail when accepted; raise the limit (ulimit -n)",
                lim.max_connections,
                files,
            )
        server_limits = ServerLimits(
            header_timeout=lim.header_timeout,
            body_timeout=lim.body_timeout,
            keepalive_timeout=lim.idle_timeout,
            max_connections=lim.max_connections,
        )
        self._listener = Listener(self._runner, server_limits)
        await self._listener.start(self.config.listen_host, self.config.listen_port)
        self.port = self._listener.port  # the bound port, when the config asked for port 0
        for name, shape in shapes.items():
            if shape.listen is None:
                continue
            own = build_shape_app(ctx, lim.max_request_bytes, SHAPES[name])
            runner = web.AppRunner(own, access_log=None, handle_signals=False)
            await runner.setup()
            listener = Listener(runner, server_limits)
            self._shape_listeners.append((runner, listener))
            host, port = split_listen(shape.listen)
            await listener.start(host, port)
            self.shape_ports[name] = listener.port or port
        if self.config.smtp.enabled:
            await self._start_smtp(ctx)
        if self.config.reload.watch and self.reloader.path is not None:
            self._watch_task = asyncio.create_task(self._watch(), name="mailmux-config-watch")

    async def _watch(self) -> None:
        try:
            await self.reloader.watch()
        except Exception:  # the node keeps running; SIGHUP and the admin API still reload
            log.exception("watching the config file failed; reload with SIGHUP or the admin API")

    async def _start_smtp(self, ctx: ApiContext) -> None:
        lim = self.config.limits
        # A stop waits for deliveries under way: each tries at most every vendor once.
        longest = longest_attempt(self.config)
        self._smtp = SmtpServer(
            self.config.smtp,
            SmtpSettings(
                limits=ctx.limits,
                keys=ctx.keys,
                timeout=max(lim.idle_timeout, lim.body_timeout),
                grace=longest * len(self.vendors) + 1.0,
                max_connections=lim.max_connections,
                metrics=ctx.metrics,
            ),
            self.deliverer.submit,
            clock=ctx.clock,
        )
        await self._smtp.start()
        self.smtp_port, self.smtp_tls_port = self._smtp.port, self._smtp.tls_port

    async def stop(self) -> None:
        """Stop taking requests, let in-flight ones finish, then flush the store."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if self._smtp is not None:
            await self._smtp.stop()
            self._smtp = None
        for _, listener in self._shape_listeners:
            await listener.close()
        if self._listener is not None:
            await self._listener.close()
        for runner, _ in self._shape_listeners:
            await runner.cleanup()
        self._shape_listeners.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._retrier_task is not None:
            self._retrier_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier_task
        self.control.close()
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        await self.deliverer.settle()  # hedges' losing attempts: their outcomes recorded
        await self.notifier.stop()
        for task in list(self._retiring):
            task.cancel()
        for vendor in [*self.vendors.values(), *self._retired]:
            await vendor.close()
        if self._usage_task is not None:
            self._usage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._usage_task
            try:
                await self.usage_writer.flush()
            except Exception:
                log.exception("writing the usage counters at stop failed; today's last counts lost")
        await self.store.close()


def shown_store(url: str) -> str:
    """The store URL for a log line: a PostgreSQL URL's password is left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def serve(app: App) -> None:
    """Run one node until SIGINT or SIGTERM; SIGHUP reloads the config file."""
    config = app.config
    await app.start()
    # Signals are handled before "listening" is logged: a SIGHUP sent as soon as it is seen
    # reloads, it does not kill the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[Any]] = set()

    def reload() -> None:
        task = loop.create_task(app.reloader.reload("signal"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    names = ", ".join(
        f"{r.vendor} ({app.vendors[r.vendor].kind}, weight {r.weight:g})" for r in app.routes
    )
    log.info(
        "mailmux listening on http://%s:%s; store %s; vendors: %s",
        config.listen_host,
        app.port,
        shown_store(config.store),
        names,
    )
    shapes = ", ".join(config.ingress.enabled()) or "none"
    log.info("ESP-shaped APIs on: %s", shapes)
    if config.notify:  # scheme and host only: a webhook's path is its secret
        targets = ", ".join(f"{t.shown} ({t.format})" for t in config.notify)
        log.info("notifications to: %s", targets)
    for setting, port in (("listen", app.smtp_port), ("listen_tls", app.smtp_tls_port)):
        if port is not None:
            address = getattr(config.smtp, setting)
            log.info("SMTP submission (smtp.%s) on %s, port %d", setting, address, port)
    if not config.client_keys:
        log.warning(
            "no api_keys or clients configured: the APIs are open to anyone who can reach %s"
            " (loopback only)",
            config.listen_host,
        )
    if not config.admin_keys and not config.is_loopback:
        log.warning("no admin_keys configured: the admin API answers 403 off loopback")
    await stop.wait()
    log.info("stopping: finishing in-flight requests")
    await app.stop()
