"""Signed webhooks: what a submission may ask for, what is sent, and the sender that delivers the outbox.

A task submitted with ``webhook_url`` (and optionally ``webhook_events``) gets, for each chosen
event, one row in the outbox table (``webhook_deliveries``) written in the same transaction as
the status change that caused it. The sender, a loop in the registry's process, delivers due rows:

- signed per Standard Webhooks with the owner's secret (``standardwebhooks`` package): headers
  ``webhook-id`` (the row's, the same on every retry), ``webhook-timestamp`` and
  ``webhook-signature``; the body is the same bytes on every attempt;
- at least once: a row stays pending until a 2xx answer, so one in flight when the registry dies
  is sent again by the next registry;
- retried after a non-2xx answer, a timeout or a connection error, following the schedule in
  ``WEBHOOK_RETRY_SCHEDULE`` (seconds between attempts) with ± ``WEBHOOK_RETRY_JITTER`` random
  spread, or after the receiver's ``Retry-After`` when it sends one (at most
  ``WEBHOOK_MAX_RETRY_AFTER_SECONDS``); a 410 Gone stops the delivery and the task's other
  pending deliveries to that URL;
- never in the way of anything else: every attempt has a total timeout; at most
  ``WEBHOOK_MAX_CONCURRENCY`` attempts run at once, and at most ``WEBHOOK_MAX_PER_USER`` for one
  user, so one user's slow or dead receiver cannot hold the others' deliveries; the HTTP work is
  asynchronous and the database work runs in threads, so task processing never waits for it;
- the URL is checked again by :mod:`serving.ssrf` before each attempt, and the request goes to
  the checked address (no DNS rebinding, no redirects).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import secrets
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Optional

from fastapi import HTTPException, status

from i18n import messages
from serving import event_journal as ev
from serving.protocol import TaskEvent, WebhookRequest
from serving.ssrf import RefusedURL, check_url_async
from storage import session_scope, utcnow
from storage.tables import WebhookDelivery
from storage.webhook_outbox import (
    DELIVERED,
    FAILED,
    GONE,
    PENDING,
    due_deliveries,
    gone_before,
    next_due_time,
    record_attempt,
    secret_for,
    stop_pending_for,
)

log = logging.getLogger("qwen_image.webhooks")

WEBHOOK_EVENTS = (ev.STARTED, ev.PROGRESS, ev.COMPLETED, ev.FAILED, ev.CANCELLED)
DEFAULT_WEBHOOK_EVENTS = (ev.COMPLETED, ev.FAILED, ev.CANCELLED)
EVENT_TYPE_PREFIX = "task."
USER_AGENT = "QwenImageService-Webhooks/1"
IDLE_WAKE_S = 30.0  # the sender looks at the outbox at least this often even when not woken


# ---------------------------------------------------------------- at submission


def parse_webhook_events(value: Any) -> list[str]:
    """``webhook_events`` as a list or a comma-separated string; the terminal events by default."""
    if value is None or value == "" or value == []:
        return list(DEFAULT_WEBHOOK_EVENTS)
    items = value if isinstance(value, (list, tuple)) else [value]
    chosen: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                messages.PARAM_INVALID(
                    field="webhook_events",
                    reason=messages.WEBHOOK_EVENT_UNKNOWN(name=repr(item), choices=", ".join(WEBHOOK_EVENTS)),
                ),
            )
        for name in (part.strip() for part in item.split(",")):
            if not name:
                continue
            if name not in WEBHOOK_EVENTS:
                raise HTTPException(
                    status.HTTP_400_BAD_REQUEST,
                    messages.PARAM_INVALID(
                        field="webhook_events",
                        reason=messages.WEBHOOK_EVENT_UNKNOWN(name=name, choices=", ".join(WEBHOOK_EVENTS)),
                    ),
                )
            if name not in chosen:
                chosen.append(name)
    return chosen or list(DEFAULT_WEBHOOK_EVENTS)


async def webhook_spec(url: Optional[str], events: Any, *, allow_private: bool) -> Optional[WebhookRequest]:
    """The ``webhook`` of a task spec from a route's fields, or None without ``webhook_url``.

    The URL passes the SSRF guard now (a refusal is a 400 naming the reason) and again before
    every delivery. Every generation route calls this; so can other doors to the same tasks.
    """
    if url is None or not url.strip():
        if events not in (None, "", []):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                messages.PARAM_INVALID(field="webhook_events", reason=messages.WEBHOOK_URL_REQUIRED),
            )
        return None
    url = url.strip()
    chosen = parse_webhook_events(events)
    try:
        await check_url_async(url, allow_private=allow_private)
    except RefusedURL as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            messages.PARAM_INVALID(field="webhook_url", reason=messages.WEBHOOK_URL_REFUSED(reason=exc.message)),
        ) from None
    return WebhookRequest(url=url, events=tuple(chosen))


# ---------------------------------------------------------------- what is sent


def new_webhook_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def webhook_body(event: str, moment: datetime, data: dict) -> str:
    """The thin payload: ``{type, timestamp, data: {task_id, status, …}}`` — a link, never an image."""
    return json.dumps(
        {"type": EVENT_TYPE_PREFIX + event, "timestamp": moment.isoformat().replace("+00:00", "Z"), "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def outbox_row(
    *, task_id: str, user_id: Optional[int], url: str, event: str, moment: datetime, data: dict
) -> WebhookDelivery:
    return WebhookDelivery(
        webhook_id=new_webhook_id(),
        task_id=task_id,
        user_id=user_id,
        event_type=EVENT_TYPE_PREFIX + event,
        url=url,
        body=webhook_body(event, moment, data),
        next_attempt_at=moment,
    )


def retry_after_seconds(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """``Retry-After`` as seconds (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - (now or utcnow())).total_seconds())


# Jitter for retry delays (a source of its own: tests pass theirs).
_JITTER = random.Random()


def next_delay(
    settings: Any, attempts_made: int, retry_after: Optional[float], rng: Optional[random.Random] = None
) -> Optional[float]:
    """Seconds until the next attempt after ``attempts_made`` failed ones; None when none is left."""
    schedule = list(settings.webhook_retry_schedule)
    if attempts_made > len(schedule):
        return None
    if retry_after is not None:
        return min(retry_after, settings.webhook_max_retry_after_seconds)
    base = schedule[attempts_made - 1]
    spread = settings.webhook_retry_jitter
    return max(0.0, base * (1 + (rng or _JITTER).uniform(-spread, spread)))


# ---------------------------------------------------------------- the sender


class WebhookSender:
    """Delivers the outbox (runs as asyncio tasks on the registry's event loop)."""

    def __init__(self, engine, settings, resolver=None):
        self.engine = engine
        self.settings = settings
        self.resolver = resolver
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self._attempts: set[asyncio.Task] = set()
        self._per_user: Counter[Optional[int]] = Counter()
        self._loop_task: Optional[asyncio.Task] = None
        self._client = None

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    def _http(self):
        if self._client is None:
            import httpx

            limits = httpx.Limits(
                max_connections=self.settings.webhook_max_concurrency,
                max_keepalive_connections=self.settings.webhook_max_concurrency,
            )
            self._client = httpx.AsyncClient(follow_redirects=False, limits=limits, trust_env=False)
        return self._client

    async def _run(self) -> None:
        while True:
            # Cleared before the outbox is read, never after: a wake() that arrives while the read
            # is in flight (a row written just after it) must end the wait below at once.
            self._wake.clear()
            try:
                wait = await self._dispatch_due()
            except Exception:  # the database is briefly unavailable: look again shortly
                log.exception("reading the webhook outbox failed")
                wait = 2.0
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    async def _dispatch_due(self) -> float:
        """Start every due delivery there is room for; returns how long to sleep if not woken."""
        room = self.settings.webhook_max_concurrency - len(self._in_flight)
        if room <= 0:
            return IDLE_WAKE_S  # a finishing delivery wakes the loop
        exclude = list(self._in_flight)

        def read() -> tuple[list[WebhookDelivery], Optional[datetime]]:
            with session_scope(self.engine) as session:
                due = due_deliveries(session, utcnow(), room * 4, exclude)
                return due, next_due_time(session, exclude + [d.id for d in due if d.id is not None])

        due, upcoming = await asyncio.to_thread(read)
        for delivery in due:
            if len(self._in_flight) >= self.settings.webhook_max_concurrency:
                break
            if self._per_user[delivery.user_id] >= self.settings.webhook_max_per_user:
                continue  # this user's receivers are busy; their next turn comes when one ends
            assert delivery.id is not None  # read from the database: it has its key
            self._in_flight.add(delivery.id)
            self._per_user[delivery.user_id] += 1
            attempt = asyncio.create_task(self._attempt(delivery))
            self._attempts.add(attempt)  # a task nobody references may be collected mid-flight
            attempt.add_done_callback(self._attempts.discard)
        if upcoming is None:
            return IDLE_WAKE_S
        return min(IDLE_WAKE_S, max(0.0, (upcoming - utcnow()).total_seconds()))

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        try:
            await self._deliver(delivery)
        except Exception:
            log.exception("webhook %s: delivery attempt failed unexpectedly", delivery.webhook_id)
        finally:
            self._in_flight.discard(delivery.id)
            self._per_user[delivery.user_id] -= 1
            if self._per_user[delivery.user_id] <= 0:
                del self._per_user[delivery.user_id]
            self._wake.set()

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        from standardwebhooks.webhooks import Webhook

        started_at = utcnow()
        clock = time.perf_counter()
        status_code: Optional[int] = None
        retry_after: Optional[float] = None
        error: Optional[str] = None
        try:
            secret, gone = await asyncio.to_thread(self._secret_and_gone, delivery)
            if gone:
                await self._record(
                    delivery, started_at, clock, None, "not sent: the receiver answered 410 Gone before", GONE
                )
                return
            if secret is None:
                await self._record(delivery, started_at, clock, None, "the task's owner no longer exists", FAILED)
                return
            checked = await self._check(delivery.url)
        except RefusedURL as exc:
            await self._record(delivery, started_at, clock, None, f"refused: {exc}", FAILED)
            return
        signer = Webhook(secret)
        moment = utcnow()
        signature = signer.sign(delivery.webhook_id, moment, delivery.body)
        headers = {
            "Host": checked.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signature,
        }
        extensions = {"sni_hostname": checked.host} if checked.scheme == "https" else {}

        async def post() -> tuple[int, Optional[float]]:
            async with self._http().stream(
                "POST",
                checked.pinned_url(),
                content=delivery.body.encode(),
                headers=headers,
                extensions=extensions,
                timeout=self.settings.webhook_timeout_seconds,
            ) as response:
                # The body is not read: a receiver's answer carries nothing we use.
                return response.status_code, retry_after_seconds(response.headers.get("retry-after"))

        try:
            # One limit on the whole attempt, not only on each read (asyncio.timeout is 3.11+).
            status_code, retry_after = await asyncio.wait_for(post(), self.settings.webhook_timeout_seconds)
        except (TimeoutError, asyncio.TimeoutError):
            error = f"timed out after {self.settings.webhook_timeout_seconds:g} s"
        except Exception as exc:  # connection refused, reset, TLS failure, …
            error = f"{type(exc).__name__}: {exc}"[:300]
        if status_code is not None and 200 <= status_code < 300:
            await self._record(delivery, started_at, clock, status_code, None, DELIVERED)
            return
        if status_code == 410:
            await self._record(
                delivery, started_at, clock, status_code, "the receiver answered 410 Gone", GONE, gone=True
            )
            return
        if status_code is not None:
            error = f"HTTP {status_code}"
        delay = next_delay(self.settings, delivery.attempts + 1, retry_after)
        if delay is None:
            await self._record(delivery, started_at, clock, status_code, error, FAILED)
            return
        await self._record(
            delivery,
            started_at,
            clock,
            status_code,
            error,
            PENDING,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    def _secret_and_gone(self, delivery: WebhookDelivery) -> tuple[Optional[str], bool]:
        with session_scope(self.engine) as session:
            return secret_for(session, delivery.user_id), gone_before(session, delivery.task_id, delivery.url)

    async def _check(self, url: str):
        return await check_url_async(
            url, allow_private=self.settings.webhook_allow_private_networks, resolver=self.resolver
        )

    async def _record(
        self,
        delivery: WebhookDelivery,
        started_at: datetime,
        clock: float,
        status_code: Optional[int],
        error: Optional[str],
        outcome: str,
        *,
        next_attempt_at: Optional[datetime] = None,
        gone: bool = False,
    ) -> None:
        duration_ms = (time.perf_counter() - clock) * 1000

        def write() -> None:
            with session_scope(self.engine) as session:
                record_attempt(
                    session,
                    delivery,
                    started_at=started_at,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    error=error,
                    status=outcome,
                    next_attempt_at=next_attempt_at,
                )
                if gone:
                    stop_pending_for(session, delivery.task_id, delivery.url, "stopped: the receiver answered 410 Gone")

        await asyncio.to_thread(write)
        if outcome != DELIVERED:
            log.info(
                "webhook %s (%s): attempt %d → %s%s",
                delivery.webhook_id,
                delivery.event_type,
                delivery.attempts + 1,
                outcome,
                f" ({error})" if error else "",
            )

    async def close(self) -> None:
        """Stops the loop and the attempts in flight, then the HTTP client. An attempt cut short here
        records nothing: its row stays pending, and the next sender sends it (at least once). Closing
        the client under a running attempt would instead record a bogus failure."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        attempts = list(self._attempts)
        for attempt in attempts:
            attempt.cancel()
        if attempts:
            await asyncio.gather(*attempts, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()


def webhook_data(
    event: TaskEvent,
    task_status: str,
    *,
    seed: Optional[int] = None,
    error: Optional[str] = None,
    base_url: Optional[str] = None,
) -> dict:
    """``data`` of a webhook payload: the task's id, status, seed, result link and error, and the
    event's own fields (a progress event's ``current_step``, ``total_steps``, ``percent``; a start's
    ``started_at``; a completion's ``generation_seconds``)."""
    link = None
    if event.type == ev.COMPLETED:
        link = (base_url.rstrip("/") if base_url else "") + ev.result_url(event.task_id)
    own = {
        key: value for key, value in event.payload().items() if key not in ("task_id", "seed", "result_url", "error")
    }
    return {"task_id": event.task_id, "status": task_status, "seed": seed, "result_url": link, "error": error, **own}


def outbox_rows(
    webhook: Optional[WebhookRequest], event: str, *, task_id: str, user_id: Optional[int], moment: datetime, data: dict
) -> list[WebhookDelivery]:
    """The outbox rows an event makes for a task's webhook (none unless it asked for that event)."""
    if webhook is None or event not in webhook.events:
        return []
    return [outbox_row(task_id=task_id, user_id=user_id, url=webhook.url, event=event, moment=moment, data=data)]


__all__ = [
    "WEBHOOK_EVENTS",
    "DEFAULT_WEBHOOK_EVENTS",
    "parse_webhook_events",
    "webhook_spec",
    "webhook_body",
    "outbox_row",
    "outbox_rows",
    "webhook_data",
    "retry_after_seconds",
    "next_delay",
    "WebhookSender",
    "new_webhook_id",
]
