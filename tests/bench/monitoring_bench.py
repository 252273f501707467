"""Monitoring benchmark (PostgreSQL): rollup catch-up, alert evaluation, a metrics series.

- ``rollup_catch_up``: 200,000 predictions over 90 days (20 model versions, a monitored
  ``locale``) are folded first; then 1,000,000 new feedback rows (ratings, reports, disputes,
  categories) are inserted and ONE ``rollups_step`` folds them (target <= 5 s). The rows are
  written by ``INSERT ... SELECT generate_series`` (the load is not timed).
- ``alert_evaluation``: a year of hourly rollups for 20 model versions (project-wide and per
  locale, 700,800 rows, synthesised directly) and 200 active rules (thresholds, baselines
  against another version, previous-days baselines; windows of 1 to 24 hours); one round of
  ``rules_evaluate`` timed, 3 rounds (target <= 1 s per round).
- ``metrics_series``: a 90-day series by day for one model version from those rollups,
  through ``GET /api/v1/metrics`` (DRF, a data key) and the selector alone; p95 of 50 calls
  (target <= 50 ms). The rollups stand for about 10M feedback rows: loading 10M raw rows here
  would take minutes, and the series reads rollups only, never raw rows.

``run.py --sections monitoring`` calls :func:`bench_monitoring`. Standalone, against a
migrated database of your choosing:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redress_mbench \\
        .venv/bin/python tests/bench/monitoring_bench.py
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

TARGETS = {"rollup_seconds_max": 5.0, "alert_round_seconds_max": 1.0, "series_p95_ms_max": 50.0}
# The targets are stated for a machine whose copy_ceiling section measures this many rows/s;
# with a copy_ceiling in the same run, run.py also judges them scaled to this machine.
REFERENCE_COPY_ROWS_PER_S = 88_000
VERSIONS = 20


def log(message: str) -> None:
    print(f"[monitoring-bench] {message}", file=sys.stderr, flush=True)


def _backend_cpu_seconds() -> float | None:
    """CPU seconds (user + system) of this connection's PostgreSQL backend so far, when the
    server runs on this machine: a figure the other processes' load does not inflate."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _project(slug: str):
    from feedback.models import Project
    from feedback.services.projects import project_create
    from monitoring.models import MonitoringSettings

    Project.objects.filter(slug=slug).delete()
    project = project_create(slug=slug, name=slug)
    MonitoringSettings.objects.create(project=project, monitored_segment_keys=["locale"])
    return project


def bench_rollup(predictions: int = 200_000, feedback: int = 1_000_000) -> dict[str, Any]:
    from django.db import connection

    from monitoring.models import RollupState
    from monitoring.rollups import rollups_rebuild, rollups_step

    project = _project("bench-monitoring-rollup")
    log(f"loading {predictions} predictions")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO feedback_prediction (project_id, external_id, model, model_version,
                segment, occurred_at, created_at, content_hash)
            SELECT %s, 'mb-' || g, 'bot', 'v' || (g %% %s),
                   jsonb_build_object('locale', (ARRAY['de-DE','en-US','fr-FR'])[1 + g %% 3]),
                   now() - (g %% (90 * 24 * 60)) * interval '1 minute',
                   now() - interval '1 hour', md5(g::text)
            FROM generate_series(1, %s) g""",
            [project.pk, VERSIONS, predictions],
        )
    rollups_rebuild()  # everything so far is counted; watermarks at the top
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(id) FROM feedback_prediction WHERE project_id = %s", [project.pk]
        )
        first = cursor.fetchone()[0]
        log(f"loading {feedback} feedback rows")
        cursor.execute(
            """
            INSERT INTO feedback_feedback (project_id, prediction_id, kind, rating, categories,
                comment, end_user, segment, request_hash, status, resolution_note, created_at)
            SELECT %s, %s + (g::bigint * 7919) %% %s,
                   (ARRAY['rating','rating','report','dispute'])[1 + g %% 4],
                   CASE WHEN g %% 4 < 2 THEN (CASE WHEN g %% 8 < 4 THEN 1 ELSE -1 END) END,
                   (ARRAY['[]','["unsafe"]','["wrong"]','["unsafe", "wrong"]'])[1 + g %% 4
                   ]::jsonb,
                   '', '', '{}'::jsonb, '',
                   CASE WHEN g %% 4 = 3 THEN (ARRAY['open','upheld','rejected'])[1 + g %% 3] END,
                   '', now() - interval '10 minutes'
            FROM generate_series(1, %s) g""",
            [project.pk, first, predictions, feedback],
        )
    before = RollupState.objects.get(pk=1).feedback_id
    cpu, load = _backend_cpu_seconds(), os.getloadavg()[0]
    started = time.perf_counter()
    result = rollups_step()
    seconds = time.perf_counter() - started
    cpu = None if cpu is None else round(_backend_cpu_seconds() - cpu, 2)
    folded = RollupState.objects.get(pk=1).feedback_id - before
    log(f"rollup step: {seconds:.2f} s (PostgreSQL CPU {cpu} s, load {load:.1f}), {result}")
    return {
        "predictions": predictions,
        "feedback": feedback,
        "seconds": round(seconds, 3),
        "postgresql_cpu_seconds": cpu,
        "loadavg_1m_before": round(load, 2),
        "hours": result["hours"],
        "rollup_rows": result["rows"],
        "feedback_ids_folded": folded,
    }


def _synthesise_year(project_id: int, days: int = 365) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO monitoring_metricrollup (project_id, model_version, hour, segment_key,
                segment_value, predictions, ratings_positive, ratings_negative, reports,
                disputes, disputes_upheld, disputes_rejected, reviews_correct,
                reviews_incorrect, reviews_unsure, weight_correct, weight_incorrect,
                weight2_correct, weight2_incorrect)
            SELECT %s, 'v' || v, date_trunc('hour', now()) - h * interval '1 hour', k.key,
                   k.value, 300 + (h * 7 + v) %% 50, 20, 10 + (h + v) %% 7, 5, 8 + (h * v) %% 5,
                   2, 3, 5, 1, 0, 10.0, 2.0, 20.0, 4.0
            FROM generate_series(0, %s) h, generate_series(0, %s) v,
                 (VALUES ('', ''), ('locale', 'de-DE'), ('locale', 'en-US'),
                         ('locale', 'fr-FR')) AS k(key, value)""",
            [project_id, days * 24 - 1, VERSIONS - 1],
        )
        rows = cursor.rowcount
        return rows


def _rules(project, count: int = 200) -> None:
    from monitoring.alerts import rule_create

    for i in range(count):
        version = f"v{i % VERSIONS}"
        kind = i % 4
        flt: dict[str, Any] = {"model_version": version if i % 10 else "latest"}
        if i % 2:
            flt["segment"] = {"locale": ["de-DE", "en-US", "fr-FR"][i % 3]}
        if kind == 0:
            condition: dict[str, Any] = {"above": 0.05}
        elif kind == 1:
            condition = {
                "baseline": {"model_version": f"v{(i + 1) % VERSIONS}"},
                "min_lift": 0.01,
                "alpha": 0.01,
            }
        else:
            condition = {"baseline": {"previous_days": 7}, "min_lift": 0.0, "alpha": 0.01}
        rule_create(
            project=project,
            data={
                "name": f"rule {i}",
                "metric": ["dispute_rate", "complaint_rate"][i % 2],
                "filter": flt,
                "window_minutes": 60 * (1 + i % 24),
                "condition": condition,
                "min_volume": 100,
                "cooldown_minutes": 60,
            },
        )


def bench_alerts_and_series(rounds: int = 3, calls: int = 50) -> dict[str, Any]:
    from django.utils import timezone
    from rest_framework.test import APIClient

    from feedback.services.keys import apikey_create
    from monitoring.alerts import rules_evaluate
    from monitoring.metrics import metric_series

    project = _project("bench-monitoring-alerts")
    log("synthesising a year of hourly rollups")
    rows = _synthesise_year(project.pk)
    _rules(project)
    round_seconds = []
    load = os.getloadavg()[0]
    for number in range(rounds):
        now = timezone.now() + dt.timedelta(minutes=number)
        started = time.perf_counter()
        events = rules_evaluate(now=now)
        round_seconds.append(time.perf_counter() - started)
        log(f"alert round {number}: {round_seconds[-1]:.3f} s, {events} events")

    _, key = apikey_create(project=project, scopes=["data"], name="bench")
    client = APIClient(HTTP_HOST="localhost")  # run.py allows 127.0.0.1 and localhost only
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    end = timezone.now()
    start = end - dt.timedelta(days=90)
    params = {
        "project": project.slug,
        "metric": "dispute_rate",
        "by": "day",
        "model_version": "v3",
        "from": start.isoformat(),
        "to": end.isoformat(),
    }
    api_ms, selector_ms = [], []
    load = os.getloadavg()[0]
    for _ in range(calls):
        t = time.perf_counter()
        response = client.get("/api/v1/metrics", params)
        api_ms.append(1000 * (time.perf_counter() - t))
        assert response.status_code == 200, response.content
        t = time.perf_counter()
        metric_series(
            project_id=project.pk,
            metric="dispute_rate",
            by="day",
            model_version="v3",
            start=start,
            end=end,
        )
        selector_ms.append(1000 * (time.perf_counter() - t))
    points = len(response.json()["series"])

    def p95(values):
        return round(statistics.quantiles(values, n=20)[-1], 2)

    return {
        "alert_evaluation": {
            "rules": 200,
            "rollup_rows": rows,
            "rounds_seconds": [round(s, 3) for s in round_seconds],
            "max_round_seconds": round(max(round_seconds), 3),
            "loadavg_1m_before": round(load, 2),
        },
        "metrics_series": {
            "points": points,
            "calls": calls,
            "api_p95_ms": p95(api_ms),
            "api_median_ms": round(statistics.median(api_ms), 2),
            "selector_p95_ms": p95(selector_ms),
            "loadavg_1m_before": round(load, 2),
            "stands_for": "a year of rollups of 20 versions (~10M feedback rows), synthesised",
        },
    }


def judge(report: dict[str, Any], targets: dict[str, float]) -> dict[str, bool]:
    return {
        "rollup_seconds": report["rollup_catch_up"]["seconds"] <= targets["rollup_seconds_max"],
        "alert_round_seconds": report["alert_evaluation"]["max_round_seconds"]
        <= targets["alert_round_seconds_max"],
        "series_p95_ms": report["metrics_series"]["api_p95_ms"] <= targets["series_p95_ms_max"],
    }


def scale(report: dict[str, Any], copy_rows_per_s: float) -> None:
    """The targets scaled to this machine by its copy ceiling (same run), and the verdicts."""
    factor = REFERENCE_COPY_ROWS_PER_S / copy_rows_per_s
    targets = {name: round(value * factor, 3) for name, value in TARGETS.items()}
    report["scaled"] = {
        "copy_ceiling_rows_per_s": copy_rows_per_s,
        "factor": round(factor, 3),
        "targets": targets,
        "meets": judge(report, targets),
    }


def bench_monitoring() -> dict[str, Any]:
    rollup = bench_rollup()
    rest = bench_alerts_and_series()
    report = {"rollup_catch_up": rollup, **rest, "targets": TARGETS}
    report["meets"] = judge(report, TARGETS)
    return report


if __name__ == "__main__":
    import json

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(bench_monitoring(), indent=2, default=str))
