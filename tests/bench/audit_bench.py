"""Audit benchmark (PostgreSQL): a segment audit over 1,000,000 labeled rows with two segment
keys and their intersection, beside fairlearn's MetricFrame on the same rows in pandas.

The rows come from ``tests/bench/labeled_data.py`` (``ensure_labeled_rows``). Measured:

- ``audit_seconds``: wall time of ``audit_create`` with the work done in the call (validation,
  the one GROUPING SETS statement, the statistics, storing the result), best and median of
  ``repeats`` weighted runs; one unweighted run for the comparison below;
- ``fairlearn``: loading the same rows into pandas (one SELECT, timed apart), then MetricFrame
  over the same figures for locale, age_band and locale x age_band; the ratio of its compute
  time (and of load + compute) to the audit's;
- ``max_abs_difference``: the largest gap between the audit's unweighted figures and
  fairlearn's over every segment and figure (a check, not a speed).

``run.py --sections audits`` calls :func:`bench_audits`. Standalone, against a database of
your choosing (migrated first):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redress_abench \\
        .venv/bin/python tests/bench/audit_bench.py --rows 1000000
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from functools import partial
from typing import Any

KEYS = ["locale", "age_band"]
CLASSES = ["approve", "deny"]
TARGET_SECONDS = 5.0  # issue 5: 1,000,000 rows, two keys and their intersection


def log(message: str) -> None:
    print(f"[audit-bench] {message}", file=sys.stderr, flush=True)


def _request(queue_id: int, *, weighted: bool) -> dict[str, Any]:
    # Unweighted with min_n = 1: every segment estimated, to compare with fairlearn.
    extra = {} if weighted else {"min_n": 1}
    return {
        **extra,
        "source": {"queue": queue_id},
        "segments": KEYS,
        "intersectional": True,
        "positive_label": "approve",
        "weighted": weighted,
    }


def _load_frame(project_id: int, queue_id: int):
    """The audited rows as a DataFrame: one SELECT of the same rows the audit reads."""
    import pandas as pd
    from django.db import connection

    sql = """
        SELECT COALESCE(p.segment ->> 'locale', '∅') AS locale,
               COALESCE(p.segment ->> 'age_band', '∅') AS age_band,
               qi.consensus ->> 'verdict' AS verdict,
               NULLIF(qi.consensus ->> 'true_label', '') AS y_true,
               p.label AS y_pred,
               COALESCE(fb.disputed, 0) AS disputed, COALESCE(fb.negative, 0) AS negative
        FROM labeling_queueitem qi
        JOIN feedback_prediction p ON p.id = qi.prediction_id
        LEFT JOIN (
            SELECT prediction_id,
                   MAX(CASE WHEN kind = 'dispute' THEN 1 ELSE 0 END) AS disputed,
                   MAX(CASE WHEN kind IN ('report', 'dispute') OR rating < 0 THEN 1 ELSE 0 END)
                       AS negative
            FROM feedback_feedback WHERE project_id = %s GROUP BY prediction_id
        ) fb ON fb.prediction_id = p.id
        WHERE qi.queue_id = %s AND qi.status = 'complete' AND qi.gold_item_id IS NULL"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [project_id, queue_id])
        columns = [c.name for c in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


def _fairlearn(df) -> tuple[dict[tuple[str, ...], dict[str, Any]], float]:
    """MetricFrame by_group for each grouping; returns the figures and the compute seconds."""
    import numpy as np
    from fairlearn.metrics import (
        MetricFrame,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
    )
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    def share(y_true, y_pred):
        return float(np.mean(y_true))

    def named(function, name):
        function.__name__ = name  # MetricFrame labels its columns by __name__
        return function

    started = time.perf_counter()
    decided = df[df.verdict.isin(["correct", "incorrect"])]
    label_metrics = {
        "accuracy": accuracy_score,
        "selection_rate": named(partial(selection_rate, pos_label="approve"), "sr"),
        "fpr": named(partial(false_positive_rate, pos_label="approve"), "fpr"),
        "fnr": named(partial(false_negative_rate, pos_label="approve"), "fnr"),
    }
    for label in CLASSES:
        label_metrics[f"precision:{label}"] = named(
            partial(precision_score, labels=[label], average="macro", zero_division=0), "p"
        )
        label_metrics[f"recall:{label}"] = named(
            partial(recall_score, labels=[label], average="macro", zero_division=0), "r"
        )
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for by in (["locale"], ["age_band"], ["locale", "age_band"]):
        frames = {
            "error_rate": MetricFrame(
                metrics=share,
                y_true=(decided.verdict == "incorrect").astype(int),
                y_pred=decided.y_true,
                sensitive_features=decided[by],
            ).by_group,
            "dispute_rate": MetricFrame(
                metrics=share, y_true=df.disputed, y_pred=df.y_true, sensitive_features=df[by]
            ).by_group,
            "negative_feedback_rate": MetricFrame(
                metrics=share, y_true=df.negative, y_pred=df.y_true, sensitive_features=df[by]
            ).by_group,
        }
        labels = MetricFrame(
            metrics=label_metrics, y_true=df.y_true, y_pred=df.y_pred, sensitive_features=df[by]
        ).by_group
        for name in label_metrics:
            frames[name] = labels[name]
        out[tuple(by)] = frames
    return out, time.perf_counter() - started


def _max_difference(result: dict[str, Any], fair: dict[tuple[str, ...], dict[str, Any]]) -> float:
    segments = {tuple(s["segment"].items()): s for s in result["segments"]}
    worst = 0.0
    for by, frames in fair.items():
        for name, series in frames.items():
            for group, value in series.items():
                values = group if isinstance(group, tuple) else (group,)
                ours = segments[tuple(zip(by, values, strict=True))]["metrics"][name]["value"]
                worst = max(worst, abs(ours - float(value)))
    return worst


def bench_audits(rows: int = 1_000_000, repeats: int = 3) -> dict[str, Any]:
    from django.db import connection

    from feedback.models import Project
    from labeling.payloads.audits import audit_request
    from labeling.services.audits import audit_create
    from tests.bench.labeled_data import ensure_labeled_rows

    log(f"ensuring {rows:,} labeled rows")
    started = time.perf_counter()
    data = ensure_labeled_rows(rows)
    prepare = time.perf_counter() - started
    project = Project.objects.get(slug=data["project"])
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE labeling_queueitem")  # a fresh table: visibility map
    load = os.getloadavg()[0]
    timings = []
    for attempt in range(repeats):
        begun = time.perf_counter()
        request = _request(data["queue"], weighted=True)
        audit = audit_create(
            project=project, request=audit_request({"project": project.slug, **request}), run="now"
        )
        timings.append(time.perf_counter() - begun)
        assert audit.status == "done", audit.error
        log(f"weighted audit {attempt + 1}: {timings[-1]:.2f} s")
    result = audit.result
    begun = time.perf_counter()
    plain = audit_create(
        project=project,
        request=audit_request({"project": project.slug, **_request(data["queue"], weighted=False)}),
        run="now",
    )
    unweighted_seconds = time.perf_counter() - begun
    log(f"unweighted audit: {unweighted_seconds:.2f} s")

    begun = time.perf_counter()
    frame = _load_frame(project.pk, data["queue"])
    load_seconds = time.perf_counter() - begun
    log(f"pandas load of {len(frame):,} rows: {load_seconds:.2f} s")
    fair, fair_seconds = _fairlearn(frame)
    log(f"fairlearn MetricFrame: {fair_seconds:.2f} s")
    audit_seconds = statistics.median(timings)
    return {
        "audits": {
            "rows": result["overall"]["n"],
            "segments": len(result["segments"]),
            "grouping_sets": 1 + len(KEYS) + 1,
            "figures_per_segment": len(result["overall"]["metrics"]),
            "audit_seconds": round(audit_seconds, 3),
            "audit_seconds_best": round(min(timings), 3),
            "audit_seconds_runs": [round(t, 3) for t in timings],
            "sql_and_statistics_seconds": result["seconds"],
            "unweighted_audit_seconds": round(unweighted_seconds, 3),
            "flagged_segments": len({f["label"] for f in result["flagged"]}),
            "fairlearn": {
                "pandas_load_seconds": round(load_seconds, 3),
                "metricframe_seconds": round(fair_seconds, 3),
                "ratio_metricframe_to_audit": round(fair_seconds / unweighted_seconds, 2),
                "ratio_load_and_metricframe_to_audit": round(
                    (load_seconds + fair_seconds) / unweighted_seconds, 2
                ),
                "max_abs_difference": _max_difference(plain.result, fair),
            },
            "prepare_seconds": round(prepare, 1),
            "loadavg_1m_at_start": load,
            "meets_target": audit_seconds <= TARGET_SECONDS,
        }
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(json.dumps(bench_audits(args.rows, args.repeats), indent=2))
