#!/usr/bin/env python
"""Redress benchmark: ``make bench``. Prints one JSON document on stdout; logs go to stderr.

Runs against PostgreSQL (``DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/
redress_bench``) and Redis (``CELERY_BROKER_URL``, also the cache). The database named in
``DATABASE_URL`` is DROPPED and recreated: never point it at one you care about.

Sections (each a function taking the ``Bench`` context and returning its part of the report;
add new ones to ``SECTIONS``):

- ``http``: gunicorn (2 workers, each worker class of ``--worker-classes``) measured by wrk:
  GET ``/bench/bare`` (Django, middleware, no DRF/DB/cache) and POST ``/api/v1/feedback``
  (one item, Bearer key, Idempotency-Key, two categories, a comment, an end user). Rows stored
  are checked against the 201s. The worker class with the best single/bare ratio (among those
  within the p99 target) serves the later sections.
- ``token_intake``: single-item POST ``/api/v1/feedback`` from an end user's browser
  (``Authorization: FeedbackToken``, one token per end user and prediction, minted offline with
  the project's token secret, a report with two categories and a comment) against the same
  request with the Bearer key, rounds alternating in one gunicorn (the worker class chosen by
  ``http``, else the first of ``--worker-classes``); the ratio token ÷ key, rows checked.
- ``batch_intake``: POST ``/api/v1/feedback/batch`` with 1,000 items per request from a few
  keep-alive ``http.client`` threads; items/s and rows stored.
- ``prediction_batch``: POST ``/api/v1/predictions`` with 1,000 new predictions per request,
  the same clients and rounds; items/s, rows stored, and the ratio to ``batch_intake``'s rate
  when both ran.
- ``copy_ceiling``: the same rows (categories on the row) written by one psycopg ``COPY``,
  the database's physical limit for this data on this machine.
- ``webhooks``: deliveries/s of a real Celery worker to a loopback receiver, and a flaky
  receiver (500 to 30%, no answer to 5%) that must end with every event delivered under one
  ``webhook-id`` each (``tests/bench/webhook_bench.py``).

Usage: ``make bench`` or ``.venv/bin/python tests/bench/run.py [--help]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/redress_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "tests.bench.settings",
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "REDRESS_INGEST_RATE": "100000000/minute",  # counted on every request, never refused
    "REDRESS_FEEDBACK_TOKEN_RATE": "100000000/minute",  # likewise for browser tokens
    "REDRESS_FEEDBACK_END_USER_RATE": "100000000/minute",
    "CACHE_KEY_PREFIX": "redress-bench",
    "DJANGO_LOG_LEVEL": "WARNING",
}

TARGETS = {
    "ratio_single_to_bare_min": 0.30,
    "single_p99_ms_max": 100.0,
    "batch_items_per_s_min": 20_000.0,
    "prediction_batch_items_per_s_min": 20_000.0,
    "prediction_to_feedback_batch_min": 0.8,
    "claim_p95_ms_max": 15.0,
    "claim_duplicates": 0,
    "sampling_seconds_max": 2.0,
    "audit_seconds_max": 5.0,
    "webhook_deliveries_per_s_min": 300.0,
    "token_to_key_single_min": 0.8,
}

PROJECT_SLUG = "bench"
CATEGORIES = ["incorrect", "incomplete"]
COMMENTS = [
    "The answer is wrong: order {n} was never refunded.",
    "It ignored half of my question about invoice {n}.",
    "It quoted {n} EUR but the price on the site is different.",
    "Off topic, I asked about parcel {n} and got a story about returns.",
]
LOCALES = ["en-US", "de-DE", "fr-FR", "es-ES"]
DEVICES = ["ios", "android", "web"]

log = logging.getLogger("bench")


# --- context ---------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    database_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="redress-bench-")))
    api_key: str = ""
    tokens_file: str = ""  # browser feedback tokens, one per line (token_intake)
    project_id: int = 0
    project_secret: str = ""
    predictions: int = 0
    worker_class: str = ""  # chosen by the http section, used by the later ones
    gunicorn_pid: int = 0  # the running master (its process group is the bench's)
    report: dict[str, Any] = field(default_factory=dict)


# --- environment, database, data -------------------------------------------------------------


def setup_environment() -> str:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    for name, value in BENCH_ENV.items():
        os.environ.setdefault(name, value)
    database_url = os.environ["DATABASE_URL"]
    if urlparse(database_url).scheme not in ("postgres", "postgresql", "pgsql"):
        raise SystemExit(f"The bench needs PostgreSQL; DATABASE_URL is {database_url!r}.")
    if not os.environ["CELERY_BROKER_URL"].startswith(("redis://", "rediss://")):
        raise SystemExit("The bench needs Redis (CELERY_BROKER_URL=redis://…).")
    return database_url


def pg_connect_kwargs(database_url: str, dbname: str | None = None) -> dict[str, Any]:
    url = urlparse(database_url)
    return {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "user": unquote(url.username or "postgres"),
        "password": unquote(url.password) if url.password else None,
        "dbname": dbname or url.path.lstrip("/"),
    }


def recreate_database(database_url: str) -> None:
    import psycopg
    from psycopg import sql

    name = urlparse(database_url).path.lstrip("/")
    log.info("recreating database %s", name)
    with psycopg.connect(**pg_connect_kwargs(database_url, "postgres"), autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        check=True,
        stdout=sys.stderr,
    )


def seed(bench: Bench) -> None:
    """A project with the default taxonomy, an ingest key, and predictions to refer to."""
    import django

    django.setup()
    from feedback.selectors import project_context
    from feedback.services.intake import predictions_log
    from feedback.services.keys import apikey_create
    from feedback.services.projects import project_create

    project = project_create(slug=PROJECT_SLUG, name="Bench")
    _, bench.api_key = apikey_create(project=project, scopes=["ingest"], name="bench")
    bench.project_id, bench.project_secret = project.pk, project.secret
    context = project_context(project=project)
    n = bench.args.predictions
    for start in range(0, n, 1000):
        items = [
            {
                "external_id": f"bench-{i:05d}",
                "model": "support-bot",
                "model_version": "2026-11-01",
                "input": {"message": f"Where is my parcel {10_000 + i}?"},
                "output": {"reply": "It is on its way.", "intent": "shipping"},
                "label": "shipping",
                "confidence": 0.5 + (i % 50) / 100,
                "segment": {"locale": LOCALES[i % 4], "device": DEVICES[i % 3]},
            }
            for i in range(start, min(n, start + 1000))
        ]
        results = predictions_log(context=context, items=items)
        assert all(r.outcome == "created" for r in results), [
            r.errors for r in results if not r.ok
        ][:3]
    from django.db import connection

    with connection.cursor() as cursor:  # what autovacuum does in production (off on some hosts)
        cursor.execute("ANALYZE feedback_prediction")
    bench.predictions = n
    log.info("seeded project %s, an ingest key and %d predictions", PROJECT_SLUG, n)


def feedback_rows() -> int:
    from feedback.models import Feedback

    return Feedback.objects.count()


def empty_feedback_table() -> None:
    """Start a measurement of bulk writes from an empty feedback table. This server's default
    shared_buffers (128 MB) holds about 400,000 feedback rows with their indexes; past that,
    backends write dirty buffers out themselves, and batch rounds two and three on the grown
    table ran at 13,709 and 12,272 items/s against 18,652 for the first (one run, same code)."""
    from django.db import connection

    from feedback.models import Feedback

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Feedback._meta.db_table} CASCADE")
        cursor.execute("CHECKPOINT")  # the dirty pages of the last round are not this one's


def rows_with_bench_categories() -> int:
    """Feedback rows holding the bench's categories (sorted, as stored)."""
    from feedback.models import Feedback

    return Feedback.objects.filter(categories=sorted(CATEGORIES)).count()


# --- gunicorn --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(bench: Bench, worker_class: str) -> Iterator[str]:
    """Start gunicorn (2 workers) with the bench settings; yield its base URL; stop it."""
    port = free_port()
    logfile = bench.workdir / f"gunicorn-{worker_class}.log"
    command = [
        str(VENV_BIN / "gunicorn"),
        "config.wsgi:application",
        "--config",
        str(ROOT / "config" / "gunicorn.py"),  # as in production (README)
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(bench.args.workers),
        "--worker-class",
        worker_class,
        "--keep-alive",
        "30",  # longer than wrk's tail: idle connections stay open
        "--log-level",
        "warning",
        "--chdir",
        str(ROOT),
    ]
    # The config file sets 8 threads, and gunicorn turns a sync worker with threads into
    # gthread: sync is sync only with --threads 1.
    threads = bench.args.threads if worker_class == "gthread" else 1
    command += ["--threads", str(threads)]
    log.info("starting %s", " ".join(command[1:]))
    with open(logfile, "wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    bench.gunicorn_pid = process.pid
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {logfile.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/bench/bare")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer within 30 s")
            time.sleep(0.2)
        yield base
    finally:
        stop_process_group(process)
        bench.gunicorn_pid = 0
        text = logfile.read_text(errors="replace")
        if "Traceback" in text:
            log.warning("gunicorn logged errors; the end of its log:\n%s", text[-3000:])


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # gunicorn: graceful stop of the workers
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the master left behind


def worker_pids(master_pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master_pid)], capture_output=True, text=True
    )
    return [int(pid) for pid in out.stdout.split()]


# --- CPU accounting: this machine may be shared -----------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu() -> dict[int, tuple[int, int, float, str, float]]:
    """pid → (ppid, process group, CPU seconds so far, command line, start time in seconds
    since boot) for every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = (
                Path(f"/proc/{entry}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
        except OSError:
            continue  # exited meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        ppid, pgrp, utime, stime = int(fields[1]), int(fields[2]), int(fields[11]), int(fields[12])
        started = int(fields[19]) / CLOCK_TICKS
        found[int(entry)] = (ppid, pgrp, (utime + stime) / CLOCK_TICKS, cmdline, started)
    return found


class CpuMeter:
    """CPU used during a measurement by the bench's processes (gunicorn, wrk, this client,
    Redis, PostgreSQL's server processes but for backends of other databases) and by
    everything else ("background"), in cores. Processes that exit during the window are not
    counted, so background is a lower bound. Figures measured with ~1 core of background load
    on a 2-core machine are not comparable with those measured on an idle one."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.dbname = urlparse(bench.database_url).path.lstrip("/")

    def ours(self, pid: int, info: tuple[int, int, float, str, float]) -> bool:
        ppid, pgrp, _, cmdline, _ = info
        if pid == os.getpid() or ppid == os.getpid():
            return True
        if self.bench.gunicorn_pid and pgrp == self.bench.gunicorn_pid:
            return True
        if "redis-server" in cmdline:
            return True
        if cmdline.startswith("postgres:"):
            # A backend is "postgres: 15/main: <user> <database> <client>(<port>) <state>";
            # the server's own processes (walwriter, checkpointer…) count as the bench's.
            words = cmdline.split()
            if len(words) >= 5 and ("(" in words[4] or words[4] == "[local]"):
                return words[3] == self.dbname
            return True
        return False

    def __enter__(self) -> CpuMeter:
        self.started = time.monotonic()
        self.uptime = float(Path("/proc/uptime").read_text().split()[0])
        self.before = process_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        after = process_cpu()
        ours = other = 0.0
        for pid, info in after.items():
            old = self.before.get(pid)
            if old is not None and old[4] == info[4]:
                used = info[2] - old[2]
            elif info[4] >= self.uptime - 0.02:
                used = info[2]  # started during the window
            else:
                continue  # was not readable before: its share of the window is unknown
            if self.ours(pid, info):
                ours += used
            else:
                other += used
        self.result = {
            "bench_cores": round(ours / elapsed, 2),
            "background_cores": round(other / elapsed, 2),
        }


def wait_for_quiet(bench: Bench) -> None:
    """Wait (at most --quiet-wait seconds) until other processes use < --quiet-cores."""
    deadline = time.monotonic() + bench.args.quiet_wait
    while True:
        with CpuMeter(bench) as meter:
            time.sleep(1.0)
        busy = meter.result["background_cores"]
        if busy < bench.args.quiet_cores:
            return
        if time.monotonic() >= deadline:
            if bench.args.quiet_wait > 0:
                log.warning("other processes use %.2f cores; measuring anyway", busy)
            return
        log.info("other processes use %.2f cores; waiting for a quieter moment", busy)
        time.sleep(2.0)


# --- wrk -------------------------------------------------------------------------------------


def wrk(bench: Bench, base: str, mode: str, seconds: float) -> dict[str, Any]:
    """Run tests/bench/wrk.lua for ``seconds`` of requests; return its BENCH_JSON line."""
    tail = 3
    command = [
        "wrk",
        f"-t{bench.args.wrk_threads}",
        f"-c{bench.args.connections}",
        f"-d{int(seconds + tail)}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH_DIR / "wrk.lua"),
        base,
        "--",
        mode,
        str(seconds),
        bench.api_key,
        str(bench.predictions),
        f"{bench.run_id}-{uuid.uuid4().hex[:6]}",  # Idempotency-Key prefix of this run
        bench.tokens_file,
    ]
    wait_for_quiet(bench)
    with CpuMeter(bench) as meter:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        time.sleep(seconds / 2)
        split = connections_per_worker(urlparse(base).port)
        out, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"wrk exited with {process.returncode}:\n{out}")
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{out}")
    result = json.loads(line.removeprefix("BENCH_JSON "))
    result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
    result["cpu"] = meter.result
    result["connections_per_worker"] = split
    return result


def connections_per_worker(port: int) -> list[int]:
    """How wrk's keep-alive connections are split between the gunicorn workers (mid-run),
    busiest first: a worker accepts whatever it wins, and the busier one sets the pace."""
    try:
        out = subprocess.run(
            ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
        ).stdout
    except FileNotFoundError:  # ss is iproute2's
        return []
    counts: dict[str, int] = {}
    for line in out.splitlines():
        pid = line.rpartition("pid=")[2].partition(",")[0]
        counts[pid] = counts.get(pid, 0) + 1
    return sorted(counts.values(), reverse=True)


def wrk_summary(result: dict[str, Any], ok_status: int) -> dict[str, Any]:
    ok = result["statuses"].get(ok_status, 0)
    elapsed = result["elapsed_s"] or 1e-9
    return {
        "rps": round(ok / elapsed, 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p95_ms": round(result["p95_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
        "max_ms": round(result["max_us"] / 1000, 2),
        "responses": result["responses"],
        "ok": ok,
        "non_2xx": sum(n for status, n in result["statuses"].items() if not 200 <= status < 300),
        "socket_errors": sum(result["socket_errors"].values()),
        "seconds": round(elapsed, 2),
        "cpu": result["cpu"],
        "connections_per_worker": result["connections_per_worker"],
    }


def wait_until_stable(count: Callable[[], int], settle: float = 1.0) -> int:
    """The count once it stops moving (requests wrk left in flight may still be finishing)."""
    last = count()
    while True:
        time.sleep(settle)
        now = count()
        if now == last:
            return now
        last = now


# --- sections --------------------------------------------------------------------------------


def quietest(bench: Bench, label: str, attempt: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """Run a measurement; while other processes used --quiet-cores or more during it, run it
    again (--retries times at most) and keep the one measured with the least background."""
    best: dict[str, Any] | None = None
    for number in range(1, bench.args.retries + 2):
        result = attempt(number)
        background = result["cpu"]["background_cores"]
        if best is None or background < best["cpu"]["background_cores"]:
            best = result
        if background < bench.args.quiet_cores:
            break
        if number <= bench.args.retries:
            log.info(
                "%s: other processes used %.2f cores meanwhile; measuring again", label, background
            )
    assert best is not None
    best["attempts"] = number
    best["quiet"] = best["cpu"]["background_cores"] < bench.args.quiet_cores
    return best


def median_round(rounds: list[dict[str, Any]], metric: str = "rps") -> dict[str, Any]:
    """The round with the median ``metric`` (the lower middle one of an even count), with
    every round's figure and connection split."""
    ordered = sorted(rounds, key=lambda r: r[metric])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen[f"rounds_{metric}"] = [r[metric] for r in rounds]
    chosen["rounds_connections_per_worker"] = [r["connections_per_worker"] for r in rounds]
    chosen["quiet"] = all(r["quiet"] for r in rounds)
    return chosen


def bench_http(bench: Bench) -> dict[str, Any]:
    """Bare view and single-item intake per worker class; picks the class for what follows."""
    args = bench.args
    by_class: dict[str, dict[str, Any]] = {}
    for worker_class in args.worker_classes:
        with gunicorn(bench, worker_class) as base:
            log.info("[%s] warm-up %ss each", worker_class, args.warmup)
            wrk(bench, base, "bare", args.warmup)
            wrk(bench, base, "feedback", args.warmup)

            def bare_view(number: int, base: str = base, worker_class: str = worker_class):
                log.info("[%s] GET /bench/bare for %ss", worker_class, args.duration)
                return wrk_summary(wrk(bench, base, "bare", args.duration), 200)

            def intake_single(number: int, base: str = base, worker_class: str = worker_class):
                rows_before, tagged_before = feedback_rows(), rows_with_bench_categories()
                log.info("[%s] POST /api/v1/feedback for %ss", worker_class, args.duration)
                raw = wrk(bench, base, "feedback", args.duration)
                single = wrk_summary(raw, 201)
                rows = wait_until_stable(feedback_rows) - rows_before
                tagged = rows_with_bench_categories() - tagged_before
                # Requests wrk sent but did not read the answer of before it stopped. wrk's
                # tail leaves time for all of them, except with sync workers: wrk reconnects
                # after every response, and a sync worker that accepts such an idle connection
                # blocks on it, leaving requests queued behind it until wrk exits. The server
                # stores those too.
                in_flight = raw["requests_sent"] - raw["responses"]
                single.update(
                    rows_stored=rows,
                    rows_with_categories=tagged,
                    in_flight_at_stop=in_flight,
                    rows_match_201s=rows == single["ok"],
                    rows_verified=rows == single["ok"] + in_flight and tagged == rows,
                    first_error=raw["first_bad"] or None,
                )
                return single

            # wrk's 16 keep-alive connections split between the two workers by chance (5/11
            # as well as 8/8), and the busier worker sets the pace: rounds of fresh connections,
            # alternating the two legs, and the median round of each leg.
            bares, singles = [], []
            for _ in range(args.rounds):
                bares.append(quietest(bench, f"[{worker_class}] bare view", bare_view))
                singles.append(quietest(bench, f"[{worker_class}] single intake", intake_single))
            bare, single = median_round(bares), median_round(singles)
            ratio = single["rps"] / bare["rps"] if bare["rps"] else 0.0
            by_class[worker_class] = {
                "bare_view": bare,
                "intake_single": single,
                "ratio_single_to_bare": round(ratio, 3),
                # Both legs measured on a quiet machine: otherwise the ratio means little.
                "comparable": bare["quiet"] and single["quiet"],
                **({"threads": args.threads} if worker_class == "gthread" else {}),
            }
            log.info(
                "[%s] bare %.0f req/s; single %.0f req/s (p50 %.1f, p99 %.1f ms), ratio %.3f, "
                "rows %d vs 201s %d",
                worker_class,
                bare["rps"],
                single["rps"],
                single["p50_ms"],
                single["p99_ms"],
                ratio,
                single["rows_stored"],
                single["ok"],
            )
    # The best ratio among classes measured quietly and within the p99 target, if any.
    pool = {k: v for k, v in by_class.items() if v["comparable"]} or by_class
    pool = {
        k: v
        for k, v in pool.items()
        if v["intake_single"]["p99_ms"] <= TARGETS["single_p99_ms_max"]
    } or pool
    bench.worker_class = max(pool, key=lambda k: pool[k]["ratio_single_to_bare"])
    chosen = by_class[bench.worker_class]
    return {
        "worker_class": bench.worker_class,
        "intake_single": chosen["intake_single"],
        "bare_view": chosen["bare_view"],
        "ratio_single_to_bare": chosen["ratio_single_to_bare"],
        "worker_classes": by_class,
    }


def mint_tokens(bench: Bench, count: int) -> str:
    """Browser feedback tokens for ``count`` end users, each about one seeded prediction,
    minted offline as an app's server would (README); returns the file holding them."""
    from feedback.feedback_tokens import token_mint
    from feedback.models import Project
    from feedback.services.feedback_tokens import token_secret_rotate

    secret = token_secret_rotate(project=Project.objects.get(pk=bench.project_id))
    now = int(time.time())
    path = bench.workdir / "tokens.txt"
    with path.open("w") as out:
        for i in range(count):
            token, _ = token_mint(
                secret=secret, project=PROJECT_SLUG,
                prediction=f"bench-{i % bench.predictions:05d}",
                end_user=f"browser-user-{i}", kinds=["rating", "report", "dispute"],
                issued_at=now, ttl_seconds=86400,
            )
            out.write(token + "\n")
    return str(path)


def bench_token_intake(bench: Bench) -> dict[str, Any]:
    """Single feedback with a browser token against the same with the key, in one server."""
    args = bench.args
    bench.tokens_file = mint_tokens(bench, 5000)
    worker_class = bench.worker_class or args.worker_classes[0]

    def leg(mode: str, label: str) -> Callable[[int], dict[str, Any]]:
        def attempt(number: int) -> dict[str, Any]:
            rows_before, tagged_before = feedback_rows(), rows_with_bench_categories()
            log.info("[%s] %s POST /api/v1/feedback for %ss", worker_class, label, args.duration)
            raw = wrk(bench, base, mode, args.duration)
            result = wrk_summary(raw, 201)
            rows = wait_until_stable(feedback_rows) - rows_before
            tagged = rows_with_bench_categories() - tagged_before
            in_flight = raw["requests_sent"] - raw["responses"]
            result.update(
                rows_stored=rows,
                rows_match_201s=rows == result["ok"],
                rows_verified=rows == result["ok"] + in_flight and tagged == rows,
                first_error=raw["first_bad"] or None,
            )
            return result

        return attempt

    with gunicorn(bench, worker_class) as base:
        log.info("[%s] warm-up %ss each", worker_class, args.warmup)
        wrk(bench, base, "feedback", args.warmup)
        wrk(bench, base, "token", args.warmup)
        keys, tokens = [], []
        for _ in range(args.rounds):
            keys.append(quietest(bench, "key single", leg("feedback", "key")))
            tokens.append(quietest(bench, "token single", leg("token", "token")))
    key, token = median_round(keys), median_round(tokens)
    ratio = token["rps"] / key["rps"] if key["rps"] else 0.0
    # CPU of the bench's processes (gunicorn, PostgreSQL, Redis, wrk) per stored row, each
    # leg's median over its rounds: on a machine shared with other work the rates swing with
    # the background, the cost per request much less.
    for leg_result, rounds in ((key, keys), (token, tokens)):
        costs = sorted(
            r["cpu"]["bench_cores"] * 1e6 / r["rps"] for r in rounds if r["rps"]
        )
        leg_result["cpu_us_per_request"] = round(costs[(len(costs) - 1) // 2]) if costs else None
    log.info(
        "[%s] key %.0f req/s; token %.0f req/s (p50 %.1f, p99 %.1f ms): ratio %.3f",
        worker_class, key["rps"], token["rps"], token["p50_ms"], token["p99_ms"], ratio,
    )
    return {
        "token_intake": {
            "worker_class": worker_class,
            "key_single": key,
            "token_single": token,
            "ratio_token_to_key": round(ratio, 3),
            "cpu_ratio_key_to_token": round(
                key["cpu_us_per_request"] / token["cpu_us_per_request"], 3
            )
            if key.get("cpu_us_per_request") and token.get("cpu_us_per_request")
            else None,
            "comparable": key["quiet"] and token["quiet"],
        }
    }


def feedback_item(bench: Bench, n: int, tag: str = "batch") -> dict[str, Any]:
    """One feedback item like the wrk script's, with its own idempotency key."""
    return {
        "prediction": f"bench-{(n * 7) % bench.predictions:05d}",
        "kind": "report",
        "categories": CATEGORIES,
        "comment": COMMENTS[n % len(COMMENTS)].format(n=10_000 + n),
        "end_user": f"user-{(n * 13) % 5000}",
        "idempotency_key": f"{bench.run_id}-{tag}-{n}",
    }


def bench_batch_intake(bench: Bench) -> dict[str, Any]:
    """1,000-item batches from ``--batch-clients`` keep-alive threads."""
    args = bench.args
    size, total, clients = args.batch_size, args.batch_items, args.batch_clients

    def batch(numbers: range, tag: str) -> bytes:
        return json.dumps({"items": [feedback_item(bench, n, tag) for n in numbers]}).encode()

    warmup = [
        batch(range(start, start + size), "warmup") for start in range(0, size * 2 * clients, size)
    ]
    with gunicorn(bench, bench.worker_class) as base:
        port = urlparse(base).port
        post_batches(port, bench.api_key, warmup, clients)

        attempts = iter(range(1, 1_000_000))

        def attempt(_: int) -> dict[str, Any]:
            # Each attempt has idempotency keys of its own: a replay would answer 200, not 201.
            number = next(attempts)
            log.info("building %d batches of %d items", total // size, size)
            bodies = [
                batch(range(start, start + size), f"batch{number}")
                for start in range(0, total, size)
            ]
            empty_feedback_table()
            rows_before = feedback_rows()
            log.info(
                "[%s] %d items in batches of %d from %d clients",
                bench.worker_class,
                total,
                size,
                clients,
            )
            wait_for_quiet(bench)
            with CpuMeter(bench) as meter:
                started = time.perf_counter()
                outcome = post_batches(port, bench.api_key, bodies, clients)
                elapsed = time.perf_counter() - started
            rows = feedback_rows() - rows_before
            created = outcome["item_statuses"].get(201, 0)
            latencies = sorted(outcome["latencies"])
            log.info("batch: %.0f items/s, rows %d vs 201s %d", created / elapsed, rows, created)
            return {
                "items_per_s": round(created / elapsed, 1),
                "requests_per_s": round(len(bodies) / elapsed, 2),
                "items": total,
                "batch_size": size,
                "clients": clients,
                "seconds": round(elapsed, 2),
                "request_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
                "request_max_ms": round(latencies[-1] * 1000, 1),
                "http_statuses": outcome["http_statuses"],
                "item_statuses": outcome["item_statuses"],
                "rows_stored": rows,
                "rows_match_201s": rows == created,
                "connections_per_worker": outcome["connections_per_worker"],
                "worker_class": bench.worker_class,
                "cpu": meter.result,
            }

        # As for single intake: the clients' connections split between the workers by chance
        # (3/0 as well as 2/1), so rounds on fresh connections, and the median round.
        rounds = [quietest(bench, "batch intake", attempt) for _ in range(args.rounds)]
        result = median_round(rounds, "items_per_s")
    return {"batch_intake": result}


def prediction_item(bench: Bench, n: int, tag: str) -> dict[str, Any]:
    """One new prediction like the seed's, with an external_id of this run and round."""
    return {
        "external_id": f"{bench.run_id}-{tag}-{n}",
        "model": "support-bot",
        "model_version": "2026-11-01",
        "input": {"message": f"Where is my parcel {10_000 + n}?"},
        "output": {"reply": "It is on its way.", "intent": "shipping"},
        "label": "shipping",
        "confidence": 0.5 + (n % 50) / 100,
        "segment": {"locale": LOCALES[n % 4], "device": DEVICES[n % 3]},
        "occurred_at": f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
    }


def predictions_tagged(prefix: str) -> int:
    from feedback.models import Prediction

    return Prediction.objects.filter(external_id__startswith=prefix).count()


def delete_predictions_tagged(prefix: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:  # no feedback refers to them
        cursor.execute("DELETE FROM feedback_prediction WHERE external_id LIKE %s", [f"{prefix}%"])


def bench_prediction_batch(bench: Bench) -> dict[str, Any]:
    """1,000-prediction batches, as ``batch_intake`` sends feedback: the same clients, rounds
    and checks. Each round's predictions are new, and deleted after it is counted (the
    feedback sections refer to the seeded predictions only)."""
    args = bench.args
    size, total, clients = args.batch_size, args.batch_items, args.batch_clients
    path = "/api/v1/predictions"

    def batch(numbers: range, tag: str) -> bytes:
        return json.dumps({"items": [prediction_item(bench, n, tag) for n in numbers]}).encode()

    with gunicorn(bench, bench.worker_class) as base:
        port = urlparse(base).port
        warmup = [
            batch(range(start, start + size), "pwarmup")
            for start in range(0, size * 2 * clients, size)
        ]
        post_batches(port, bench.api_key, warmup, clients, path)
        delete_predictions_tagged(f"{bench.run_id}-pwarmup-")
        attempts = iter(range(1, 1_000_000))

        def attempt(_: int) -> dict[str, Any]:
            tag = f"pbatch{next(attempts)}"
            log.info("building %d prediction batches of %d items", total // size, size)
            bodies = [batch(range(start, start + size), tag) for start in range(0, total, size)]
            wait_for_quiet(bench)
            with CpuMeter(bench) as meter:
                started = time.perf_counter()
                outcome = post_batches(port, bench.api_key, bodies, clients, path)
                elapsed = time.perf_counter() - started
            rows = predictions_tagged(f"{bench.run_id}-{tag}-")
            delete_predictions_tagged(f"{bench.run_id}-{tag}-")
            created = outcome["item_statuses"].get(201, 0)
            latencies = sorted(outcome["latencies"])
            log.info(
                "predictions: %.0f items/s, rows %d vs 201s %d", created / elapsed, rows, created
            )
            return {
                "items_per_s": round(created / elapsed, 1),
                "requests_per_s": round(len(bodies) / elapsed, 2),
                "items": total,
                "batch_size": size,
                "clients": clients,
                "seconds": round(elapsed, 2),
                "request_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
                "request_max_ms": round(latencies[-1] * 1000, 1),
                "http_statuses": outcome["http_statuses"],
                "item_statuses": outcome["item_statuses"],
                "rows_stored": rows,
                "rows_match_201s": rows == created == total,
                "connections_per_worker": outcome["connections_per_worker"],
                "worker_class": bench.worker_class,
                "cpu": meter.result,
            }

        rounds = [quietest(bench, "prediction batches", attempt) for _ in range(args.rounds)]
        result = median_round(rounds, "items_per_s")
    return {"prediction_batch": result}


def post_batches(
    port: int, api_key: str, bodies: list[bytes], clients: int, path: str = "/api/v1/feedback/batch"
) -> dict[str, Any]:
    work: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        work.put(body)
    lock = threading.Lock()
    http_statuses: dict[int, int] = {}
    item_statuses: dict[int, int] = {}
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        while True:
            try:
                body = work.get_nowait()
            except queue.Empty:
                break
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            took = time.perf_counter() - started
            counts: dict[int, int] = {}
            if response.status == 200:
                for entry in json.loads(payload)["results"]:
                    counts[entry["status"]] = counts.get(entry["status"], 0) + 1
            with lock:
                latencies.append(took)
                http_statuses[response.status] = http_statuses.get(response.status, 0) + 1
                for status, n in counts.items():
                    item_statuses[status] = item_statuses.get(status, 0) + n
                if response.status != 200 and len(failures) < 3:
                    failures.append(payload[:300].decode(errors="replace"))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    split = connections_per_worker(port)
    for thread in threads:
        thread.join()
    if failures:
        log.warning("batch failures: %s", failures)
    return {
        "http_statuses": http_statuses,
        "item_statuses": item_statuses,
        "latencies": latencies,
        "connections_per_worker": split,
    }


def bench_copy_ceiling(bench: Bench) -> dict[str, Any]:
    """The same rows as the batch section (categories on the row), written by COPY: once
    on one connection, once split over ``--copy-streams`` connections (as many as gunicorn
    workers write from). The faster is the ceiling."""
    total, streams = bench.args.batch_items, bench.args.copy_streams
    log.info("building 2 x %d rows for COPY", total)
    single = copy_rows(bench, [build_copy_rows(bench, total, "copy1")])
    rows = build_copy_rows(bench, total, f"copy{streams}")
    chunk = -(-total // streams)
    parallel = copy_rows(bench, [rows[i : i + chunk] for i in range(0, total, chunk)])
    best = max(single, parallel, key=lambda r: r["rows_per_s"])
    result = {
        "rows_per_s": best["rows_per_s"],
        "streams": best["streams"],
        "rows": total,
        "by_streams": {str(r["streams"]): r for r in (single, parallel)},
        "method": "psycopg COPY into the feedback table (categories a JSON column of the "
        "row), one transaction per connection (ids from the table's sequence); rows built "
        "before timing",
    }
    log.info(
        "COPY: %.0f rows/s on 1 connection, %.0f on %d",
        single["rows_per_s"],
        parallel["rows_per_s"],
        streams,
    )
    return {"copy_ceiling": result}


def build_copy_rows(bench: Bench, total: int, tag: str) -> list[tuple[Any, ...]]:
    """What feedback_submit stores for the batch section's items 0..total-1 (but the ids, and
    idempotency keys of their own)."""
    from psycopg.types.json import Jsonb

    from feedback.models import Prediction
    from feedback.pii import scrub_text
    from feedback.validation import content_hash

    stored = Prediction.objects.filter(project_id=bench.project_id)
    predictions = dict(stored.values_list("external_id", "id"))
    segments = dict(stored.values_list("id", "segment"))
    secret = bench.project_secret.encode()
    created_at = dt.datetime.now(tz=dt.UTC)
    rows = []
    for n in range(total):
        item = feedback_item(bench, n, tag)
        key = item.pop("idempotency_key")
        prediction_id = predictions[item["prediction"]]
        rows.append(
            (
                bench.project_id,
                prediction_id,
                item["kind"],
                None,
                json.dumps(sorted(set(item["categories"]))),
                scrub_text(item["comment"]),
                None,
                hmac.new(secret, item["end_user"].encode(), hashlib.sha256).hexdigest(),
                Jsonb(segments[prediction_id]),
                key,
                content_hash(item),
                None,
                "",
                None,
                None,
                created_at,
            )
        )
    return rows


COPY_COLUMNS = [
    "id",
    "project_id",
    "prediction_id",
    "kind",
    "rating",
    "categories",
    "comment",
    "correction",
    "end_user",
    "segment",
    "idempotency_key",
    "request_hash",
    "status",
    "resolution_note",
    "resolved_at",
    "resolved_by_id",
    "created_at",
]


def copy_rows(bench: Bench, parts: list[list[tuple[Any, ...]]]) -> dict[str, Any]:
    """COPY each part on a connection of its own, concurrently; rows/s over all of them."""
    import psycopg

    from feedback.models import Feedback

    table = Feedback._meta.db_table
    empty_feedback_table()  # as each batch round starts
    connections = [psycopg.connect(**pg_connect_kwargs(bench.database_url)) for _ in parts]
    errors: list[BaseException] = []

    def write(conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                    (table, len(rows)),
                )
                ids = [row[0] for row in cur.fetchall()]
                with cur.copy(f"COPY {table} ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
                    for feedback_id, row in zip(ids, rows, strict=True):
                        copy.write_row((feedback_id, *row))
            conn.commit()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    wait_for_quiet(bench)
    try:
        with CpuMeter(bench) as meter:
            started = time.perf_counter()
            threads = [
                threading.Thread(target=write, args=(conn, rows))
                for conn, rows in zip(connections, parts, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            conn.close()
    if errors:
        raise errors[0]
    total = sum(len(rows) for rows in parts)
    return {
        "rows_per_s": round(total / elapsed, 1),
        "streams": len(parts),
        "seconds": round(elapsed, 3),
        "cpu": meter.result,
    }


def bench_sampling_section(bench: Bench) -> dict[str, Any]:
    from tests.bench import labeling_bench

    return {"sampling": labeling_bench.bench_sampling(predictions=1_000_000, sample=10_000)}


def bench_claims_section(bench: Bench) -> dict[str, Any]:
    from tests.bench import labeling_bench

    # Saturated: 32 reviewers with no think time (the machine's ceiling for claim+label).
    # Paced: the same 32 with 0.25-0.75 s on each item, the latency a reviewer sees.
    return {
        "claims_saturated": labeling_bench.bench_claims(items=3000, reviewers=32),
        "claims": labeling_bench.bench_claims(items=1000, reviewers=32, think=0.5),
    }


def bench_claims_after_draw_section(bench: Bench) -> dict[str, Any]:
    from tests.bench import labeling_bench

    # 100,000 items drawn, then 8 reviewers claim and label at once; no ANALYZE after the draw.
    return {"claims_after_draw": labeling_bench.bench_claims_after_draw(draw=100_000)}


def bench_exports_section(bench: Bench) -> dict[str, Any]:
    from tests.bench import export_bench

    return {"exports": export_bench.bench_exports(rows=1_000_000)}


def bench_audits_section(bench: Bench) -> dict[str, Any]:
    from tests.bench import audit_bench

    return audit_bench.bench_audits(rows=1_000_000)


def bench_monitoring_section(bench: Bench) -> dict[str, Any]:
    from tests.bench import monitoring_bench

    return {"monitoring": monitoring_bench.bench_monitoring()}
def bench_webhooks_section(bench: Bench) -> dict[str, Any]:
    from tests.bench import webhook_bench

    return {
        "webhooks": webhook_bench.bench_webhooks(
            project_id=bench.project_id,
            events=bench.args.webhook_events,
            flaky_events=bench.args.webhook_flaky_events,
        )
    }


SECTIONS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "http": bench_http,
    "token_intake": bench_token_intake,
    "batch_intake": bench_batch_intake,
    "prediction_batch": bench_prediction_batch,
    "copy_ceiling": bench_copy_ceiling,
    "sampling": bench_sampling_section,
    "claims": bench_claims_section,
    "claims_after_draw": bench_claims_after_draw_section,
    "audits": bench_audits_section,
    "exports": bench_exports_section,
    "monitoring": bench_monitoring_section,
    "webhooks": bench_webhooks_section,
}


# --- report ----------------------------------------------------------------------------------


def machine_info(database_url: str) -> dict[str, Any]:
    import django
    import gunicorn as gunicorn_package
    import psycopg
    import redis

    with psycopg.connect(**pg_connect_kwargs(database_url, "postgres")) as conn:
        pg = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }
    client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk_version = ""  # wrk is only needed by the http section
    if shutil.which("wrk") is not None:
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return {
        "cores": os.cpu_count(),
        "loadavg_at_start": os.getloadavg()[0],
        "cpu": cpu_model,
        "python": platform.python_version(),
        "django": django.get_version(),
        "gunicorn": gunicorn_package.__version__,
        "psycopg": psycopg.__version__,
        "postgresql": pg.pop("server_version"),
        "postgresql_settings": pg,
        "redis": client.info("server")["redis_version"],
        "wrk": wrk_version.split(" [")[0].strip(),
    }


def judge(report: dict[str, Any]) -> dict[str, Any]:
    meets: dict[str, Any] = {}
    if "ratio_single_to_bare" in report:
        meets["ratio_single_to_bare"] = (
            report["ratio_single_to_bare"] >= TARGETS["ratio_single_to_bare_min"]
        )
        single = report["intake_single"]
        meets["single_p99_ms"] = single["p99_ms"] <= TARGETS["single_p99_ms_max"]
        meets["single_rows_verified"] = single["rows_match_201s"] and single["non_2xx"] == 0
    if "token_intake" in report:
        tokens = report["token_intake"]
        meets["token_to_key_single"] = (
            tokens["ratio_token_to_key"] >= TARGETS["token_to_key_single_min"]
        )
        meets["token_rows_verified"] = (
            tokens["token_single"]["rows_match_201s"] and tokens["token_single"]["non_2xx"] == 0
        )
    if "batch_intake" in report:
        batch = report["batch_intake"]
        meets["batch_items_per_s"] = batch["items_per_s"] >= TARGETS["batch_items_per_s_min"]
        meets["batch_rows_verified"] = batch["rows_match_201s"]
    if "prediction_batch" in report:
        predictions = report["prediction_batch"]
        meets["prediction_batch_items_per_s"] = (
            predictions["items_per_s"] >= TARGETS["prediction_batch_items_per_s_min"]
        )
        meets["prediction_batch_rows_verified"] = predictions["rows_match_201s"]
        if "prediction_to_feedback_batch" in report:
            meets["prediction_to_feedback_batch"] = (
                report["prediction_to_feedback_batch"]
                >= TARGETS["prediction_to_feedback_batch_min"]
            )
    if "claims" in report:
        meets["claim_p95_ms"] = report["claims"]["claim_p95_ms"] <= TARGETS["claim_p95_ms_max"]
        meets["claim_duplicates"] = (
            report["claims"]["duplicates"] == 0 == report["claims_saturated"]["duplicates"]
        )
    if "claims_after_draw" in report:
        after_draw = report["claims_after_draw"]["claim_p95_ms"]
        meets["claim_after_draw_p95_ms"] = after_draw <= TARGETS["claim_p95_ms_max"]
    if "sampling" in report:
        meets["sampling_seconds"] = report["sampling"]["seconds"] <= TARGETS["sampling_seconds_max"]
    if "audits" in report:
        meets["audit_seconds"] = report["audits"]["audit_seconds"] <= TARGETS["audit_seconds_max"]
    if "monitoring" in report:
        monitoring = report["monitoring"]
        verdicts = monitoring.get("scaled", monitoring)["meets"]  # scaled by the copy ceiling
        meets.update({f"monitoring_{k}": v for k, v in verdicts.items()})
    if "webhooks" in report:
        hooks = report["webhooks"]
        meets["webhook_deliveries_per_s"] = (
            hooks["throughput"]["deliveries_per_s"] >= TARGETS["webhook_deliveries_per_s_min"]
        )
        meets["webhooks_none_lost_one_id_each"] = (
            hooks["flaky"]["lost"] == 0 and hooks["flaky"]["webhook_ids_per_event_max"] == 1
        )
    # Not a target: whether the figures above were measured without other load on the machine.
    quiet = (
        [report["worker_classes"][report["worker_class"]]["comparable"]]
        if ("worker_class" in report)
        else []
    )
    quiet += [report["batch_intake"]["quiet"]] if "batch_intake" in report else []
    quiet += [report["prediction_batch"]["quiet"]] if "prediction_batch" in report else []
    meets["measured_quietly"] = all(quiet)
    return meets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--worker-classes",
        default="sync,gthread",
        help="gunicorn worker classes to try (default: sync,gthread)",
    )
    parser.add_argument("--workers", type=int, default=2)
    # 8: with 4, single intake left the machine partly idle between database round trips
    # (ratio 0.171 against 0.211 with 8 and 0.213 with 16, measured back to back).
    parser.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=12, help="seconds per wrk measurement")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of wrk warm-up")
    parser.add_argument("--predictions", type=int, default=1000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="bare/single rounds per worker class (median)"
    )
    parser.add_argument("--webhook-events", type=int, default=3000)
    parser.add_argument("--webhook-flaky-events", type=int, default=1000)
    parser.add_argument("--batch-items", type=int, default=150_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--batch-clients", type=int, default=4, help="keep-alive clients (two per worker)"
    )
    parser.add_argument(
        "--copy-streams",
        type=int,
        default=2,
        help="connections for the parallel COPY (default: one per core)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30,
        help="seconds to wait, before each measurement, for other processes to "
        "go quiet (the figures say how busy the machine was anyway)",
    )
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.25,
        help="what counts as quiet: cores used by other processes",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="measure again (at most this often) when it was not quiet",
    )
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    args.worker_classes = [w for w in args.worker_classes.split(",") if w]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    # Own handler: django.setup() applies the project's LOGGING (root at WARNING here).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s bench %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    args = parse_args(argv)
    if shutil.which("wrk") is None and {"http", "token_intake"} & set(args.sections):
        raise SystemExit("wrk is not installed (apt-get install wrk).")
    database_url = setup_environment()
    bench = Bench(args=args, database_url=database_url)
    try:
        recreate_database(database_url)
        seed(bench)
        bench.worker_class = args.worker_classes[0]
        report: dict[str, Any] = {"machine": machine_info(database_url)}
        for name in args.sections:
            log.info("== %s", name)
            report.update(SECTIONS[name](bench))
        if "monitoring" in report and "copy_ceiling" in report:
            from tests.bench import monitoring_bench

            monitoring_bench.scale(report["monitoring"], report["copy_ceiling"]["rows_per_s"])
        if "batch_intake" in report and "copy_ceiling" in report:
            report["batch_to_copy_ratio"] = round(
                report["batch_intake"]["items_per_s"] / report["copy_ceiling"]["rows_per_s"], 3
            )
        if "batch_intake" in report and "prediction_batch" in report:
            report["prediction_to_feedback_batch"] = round(
                report["prediction_batch"]["items_per_s"] / report["batch_intake"]["items_per_s"], 3
            )
        report["targets"] = TARGETS
        report["meets"] = judge(report)
    finally:
        from django.db import connections

        connections.close_all()
        shutil.rmtree(bench.workdir, ignore_errors=True)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
