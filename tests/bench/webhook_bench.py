"""Webhook delivery bench: a real Celery worker (default settings: prefork, one process per
core) delivering to a threaded HTTP receiver on loopback.

- ``throughput``: N events committed in one transaction to one endpoint that answers 200;
  deliveries/s from the commit until the receiver has every event (and, reported apart, until
  the database has recorded every one as succeeded).
- ``flaky``: the receiver answers 500 to 30% of requests and never answers 5% (the attempt
  times out); with the retry schedule compressed through ``REDRESS_WEBHOOK_RETRY_SECONDS``,
  every event must end delivered, each under one ``webhook-id``, none lost.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.webhooks.receiver import Receiver

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TIMEOUT = 1.0  # seconds: a hanging receiver costs this per attempt
# Compressed retries: 20 attempts, so an event fails for good with probability 0.35^20 < 1e-9
# (with 13, one event of 1,000 once ran out of tries: 12 answers of 500 and a timeout).
RETRIES = "0.2,0.5,1,1,2,2,3,3,3,3,3,3,3,3,3,3,3,3,3"


def _worker() -> subprocess.Popen:
    env = {
        **os.environ,
        "REDRESS_WEBHOOK_ALLOW_PRIVATE": "true",
        "REDRESS_WEBHOOK_TIMEOUT": str(TIMEOUT),
        "REDRESS_WEBHOOK_RETRY_SECONDS": RETRIES,
    }
    return subprocess.Popen(
        [str(VENV_BIN / "celery"), "-A", "config", "worker", "--loglevel=WARNING"],
        cwd=ROOT, env=env, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _emit(project_id: int, count: int, tag: str) -> list[str]:
    from django.db import transaction

    from feedback.services.events import event_emit

    with transaction.atomic():
        return [
            event_emit(project_id=project_id, type="export.finished",
                       data={"id": i, "bench": tag}).uid
            for i in range(count)
        ]


def _wait(condition, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _open_deliveries(webhook_id: int) -> int:
    from webhooks.models import WebhookDelivery

    return WebhookDelivery.objects.filter(
        webhook_id=webhook_id, status__in=["pending", "retrying"]
    ).count()


class Tally:
    """What the receiver saw, per webhook-id: attempts and 2xx answers."""

    def __init__(self, behave) -> None:
        self.lock = threading.Lock()
        self.answered: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.ids_per_event: dict[int, set[str]] = {}
        self.hung = self.failed = 0
        self.behave = behave

    def __call__(self, i: int, request):
        answer = self.behave(i, request)
        event_id = request.headers.get("webhook-id", "")
        number = json.loads(request.body)["data"]["id"]
        with self.lock:
            self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
            self.ids_per_event.setdefault(number, set()).add(event_id)
            if answer is None:
                self.hung += 1
            elif 200 <= answer[0] < 300:
                self.answered[event_id] = self.answered.get(event_id, 0) + 1
            else:
                self.failed += 1
        return answer


def bench_webhooks(*, project_id: int, events: int = 3000, flaky_events: int = 1000) -> dict:
    from config.celery import app
    from webhooks.models import Webhook, WebhookDelivery

    app.control.purge()  # nothing left over from an earlier run on this broker db
    report: dict[str, Any] = {"timeout_s": TIMEOUT, "retry_seconds": RETRIES}
    worker = _worker()
    try:
        # --- throughput -------------------------------------------------------------------
        tally = Tally(lambda i, request: (200, {}, b""))
        with Receiver(tally) as receiver:
            hook = Webhook.objects.create(project_id=project_id, url=receiver.url(), events=["*"])
            warm = _emit(project_id, 20, "warm-up")
            if not _wait(lambda: len(tally.answered) >= len(warm), 120):
                raise RuntimeError("the worker delivered nothing within 120 s")
            log.info("webhooks: worker up; %d events to one endpoint", events)
            before = time.monotonic()
            uids = _emit(project_id, events, "throughput")
            started = time.monotonic()  # committed: the workers may begin
            everything = set(uids) | set(warm)
            _wait(lambda: everything <= set(tally.answered), 600)
            received = time.monotonic() - started
            _wait(lambda: _open_deliveries(hook.pk) == 0, 60)
            settled = time.monotonic() - started
            succeeded = WebhookDelivery.objects.filter(webhook=hook, status="succeeded").count()
        report["throughput"] = {
            "events": events,
            "emit_and_commit_seconds": round(started - before, 3),
            "seconds": round(received, 3),
            "deliveries_per_s": round(events / received, 1),
            "seconds_until_recorded": round(settled, 3),
            "succeeded_in_db": succeeded - len(warm),
            "duplicates": sum(n - 1 for n in tally.answered.values()),
            "receiver_requests": len(receiver.requests),
        }
        Webhook.objects.filter(pk=hook.pk).update(active=False)
        log.info("webhooks: throughput %s", report["throughput"])

        # --- flaky receiver ---------------------------------------------------------------
        chance = random.Random(15)
        lock = threading.Lock()

        def flaky(i: int, request):
            with lock:
                roll = chance.random()
            if roll < 0.05:
                return None  # never answers: the attempt times out
            if roll < 0.35:
                return 500, {}, b"try later"
            return 200, {}, b""

        tally = Tally(flaky)
        with Receiver(tally) as receiver:
            hook = Webhook.objects.create(project_id=project_id, url=receiver.url(), events=["*"])
            started = time.monotonic()
            uids = _emit(project_id, flaky_events, "flaky")
            _wait(lambda: (_open_deliveries(hook.pk) == 0 and len(tally.answered) >= len(uids))
                  or (_open_deliveries(hook.pk) == 0 and time.monotonic() - started > 5), 900)
            elapsed = time.monotonic() - started
            rows = WebhookDelivery.objects.filter(webhook=hook)
            by_status = {s: rows.filter(status=s).count()
                         for s in ("pending", "retrying", "succeeded", "failed")}
            attempts = sorted(rows.values_list("attempts", flat=True))
        lost = [uid for uid in uids if uid not in tally.answered]
        report["flaky"] = {
            "events": flaky_events,
            "seconds": round(elapsed, 3),
            "requests": sum(tally.attempts.values()),
            "answered_500": tally.failed,
            "never_answered": tally.hung,
            "delivered": sum(1 for uid in uids if uid in tally.answered),
            "lost": len(lost),
            "deliveries_by_status": by_status,
            "max_attempts_of_one_event": attempts[-1] if attempts else 0,
            "webhook_ids_per_event_max": max(len(ids) for ids in tally.ids_per_event.values()),
            "duplicate_2xx": sum(n - 1 for n in tally.answered.values()),
        }
        log.info("webhooks: flaky %s", report["flaky"])
    finally:
        _stop(worker)
    return report
