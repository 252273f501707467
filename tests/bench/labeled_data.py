"""Labeled data for the export and audit benchmarks: ``ensure_labeled_rows(n, seed=...)``.

Creates on PostgreSQL, in SQL (``INSERT … SELECT generate_series``), a project ``bench-labeled``
with one queue of ``n`` completed queue items over ``n`` predictions. Every attribute is a
deterministic function of (seed, row number) through md5, so two machines build the same data:

- segment: ``locale`` (8 values, skewed 40/20/12/10/8/5/3/2 %), ``age_band`` (5), ``device`` (3);
- predicted label approve/deny (60/40) with a confidence in [0.5, 1);
- consensus: verdict ``incorrect`` for about 15 % of rows, the rate varying by locale and age
  band (so an audit has something to find), true_label, categories, agreement, n_labels;
- inclusion probability by stratum (the locale): small locales were over-sampled;
- individual ``Label`` rows for 20 % of items (``n_labels`` each, three bench reviewers);
- feedback on about 12 % of predictions: disputes (3 %), negative ratings (6 %), reports with a
  category (3 %), disputes and negative feedback more frequent where the model is wrong.

Idempotent: a second call with the same ``n`` and ``seed`` finds the queue complete and returns
at once; predictions are shared between calls with the same seed (``ON CONFLICT DO NOTHING``).
Everything is one transaction, so an interrupted call leaves nothing half made.
"""

from __future__ import annotations

import time
from typing import Any

PROJECT_SLUG = "bench-labeled"
LOCALES = ["en-US", "de-DE", "fr-FR", "es-ES", "it-IT", "pt-BR", "ja-JP", "nl-NL"]
LOCALE_WEIGHTS = [40, 20, 12, 10, 8, 5, 3, 2]
# Share sampled per locale stratum (π): small strata were over-sampled for the audit.
LOCALE_PI = [0.02, 0.04, 0.06, 0.08, 0.1, 0.2, 0.4, 0.5]
# Error rate per locale (before the age adjustment): about 15 % overall.
LOCALE_ERROR = [0.12, 0.14, 0.15, 0.16, 0.18, 0.22, 0.26, 0.20]
AGE_BANDS = ["18-24", "25-34", "35-44", "45-64", "65+"]
AGE_ERROR_SHIFT = [0.01, -0.02, -0.02, 0.0, 0.06]
DEVICES = ["ios", "android", "web"]
REVIEWERS = ["bench-labeler-1", "bench-labeler-2", "bench-labeler-3"]


def _case(column: str, values: list[Any], weights: list[float] | None = None) -> str:
    """SQL ``CASE`` picking ``values[k]`` from a uniform ``column`` by cumulative weights."""
    weights = weights or [1.0] * len(values)
    total = float(sum(weights))
    parts, cumulative = [], 0.0
    for value, weight in zip(values[:-1], weights[:-1], strict=True):
        cumulative += weight / total
        parts.append(f"WHEN {column} < {cumulative!r} THEN {_literal(value)}")
    return f"(CASE {' '.join(parts)} ELSE {_literal(values[-1])} END)"


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _lookup(index_column: str, values: list[Any]) -> str:
    """SQL picking ``values[index]`` for an integer column."""
    whens = " ".join(f"WHEN {k} THEN {_literal(v)}" for k, v in enumerate(values))
    return f"(CASE {index_column} {whens} END)"


def _generate_sql(n: int, seed: int) -> str:
    # Eight uniforms per row from two md5 digests (32 bits each).
    uniforms = ", ".join(
        f"(('x' || substr(h{d}, {1 + 8 * k}, 8))::bit(32)::bigint / 4294967296.0) AS u{4 * d + k}"
        for d in range(2)
        for k in range(4)
    )
    locale_idx = _case("u0", list(range(8)), LOCALE_WEIGHTS)
    return f"""
        CREATE TEMP TABLE bench_gen ON COMMIT DROP AS
        WITH raw AS (
            SELECT i, md5('{seed}:' || i || ':a') AS h0, md5('{seed}:' || i || ':b') AS h1
            FROM generate_series(1, {n}) AS i
        ), u AS (SELECT i, {uniforms} FROM raw)
        SELECT i, {locale_idx} AS locale_idx,
               least(4, floor(u1 * 5))::int AS age_idx,
               least(2, floor(u2 * 3))::int AS device_idx,
               u3, u4, u5, u6, u7
        FROM u
    """


def ensure_labeled_rows(n: int, *, seed: int = 0) -> dict:
    """Make sure the bench project holds a queue of ``n`` completed items; see the module doc."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from feedback.models import Project
    from feedback.services.projects import project_create
    from labeling.models import Queue, QueueItem

    if connection.vendor != "postgresql":
        raise RuntimeError("ensure_labeled_rows needs PostgreSQL (generate_series, md5 casts).")
    queue_name = f"labeled-{n}-seed-{seed}"
    project = Project.objects.filter(slug=PROJECT_SLUG).first()
    if project is not None:
        queue = Queue.objects.filter(project=project, name=queue_name).first()
        if queue is not None and QueueItem.objects.filter(queue=queue).count() == n:
            return {"project": PROJECT_SLUG, "queue": queue.pk, "rows": n}

    started = time.perf_counter()
    with transaction.atomic():
        if project is None:
            project = project_create(slug=PROJECT_SLUG, name="Bench (labeled data)")
        queue, _ = Queue.objects.get_or_create(
            project=project,
            name=queue_name,
            defaults={
                "label_choices": ["approve", "deny"],
                "strategy": "stratified",
                "strata": ["locale"],
                "seed": seed,
            },
        )
        # A re-run after a partial failure never gets here with items (one transaction), but
        # a queue of another size with this name would: start it over.
        QueueItem.objects.filter(queue=queue).delete()
        user_model = get_user_model()
        reviewer_ids = [
            user_model.objects.get_or_create(username=name, defaults={"is_staff": True})[0].pk
            for name in REVIEWERS
        ]
        with connection.cursor() as cursor:
            cursor.execute(_generate_sql(n, seed))
            _insert_predictions(cursor, project.pk, seed)
            _insert_items(cursor, project.pk, queue.pk, seed)
            _insert_labels(cursor, queue.pk, reviewer_ids)
            _insert_feedback(cursor, project.pk, seed)
    with connection.cursor() as cursor:
        for table in ("feedback_prediction", "labeling_queueitem", "labeling_label"):
            cursor.execute(f"ANALYZE {table}")
        cursor.execute("ANALYZE feedback_feedback")
    return {
        "project": PROJECT_SLUG,
        "queue": queue.pk,
        "rows": n,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _error_rate_sql() -> str:
    return f"({_lookup('locale_idx', LOCALE_ERROR)} + {_lookup('age_idx', AGE_ERROR_SHIFT)})"


def _insert_predictions(cursor, project_id: int, seed: int) -> None:
    locale = _lookup("locale_idx", LOCALES)
    age = _lookup("age_idx", AGE_BANDS)
    device = _lookup("device_idx", DEVICES)
    cursor.execute(
        f"""
        INSERT INTO feedback_prediction
            (project_id, external_id, model, model_version, input, output, label, confidence,
             segment, occurred_at, created_at, content_hash)
        SELECT %s, 'bl{seed}-' || lpad(i::text, 8, '0'), 'loan-screener',
               CASE WHEN u7 < 0.5 THEN '2026-10-01' ELSE '2026-11-01' END,
               jsonb_build_object('applicant', i, 'amount', (1000 + floor(u5 * 49000))::int,
                                  'text', 'Application ' || i),
               jsonb_build_object('decision', CASE WHEN u3 < 0.6 THEN 'approve' ELSE 'deny' END,
                                  'reason', 'score ' || round(u4::numeric, 3)),
               CASE WHEN u3 < 0.6 THEN 'approve' ELSE 'deny' END,
               round((0.5 + u4 * 0.4999)::numeric, 4)::double precision,
               jsonb_build_object('locale', {locale}, 'age_band', {age}, 'device', {device}),
               timestamptz '2026-11-01 00:00:00+00' + i * interval '1 second',
               now(), md5('bl{seed}:' || i)
        FROM bench_gen
        ON CONFLICT (project_id, external_id) DO NOTHING
        """,
        [project_id],
    )


def _insert_items(cursor, project_id: int, queue_id: int, seed: int) -> None:
    """One completed item per prediction, with its consensus and π."""
    error = _error_rate_sql()
    cursor.execute(
        f"""
        CREATE TEMP TABLE bench_items ON COMMIT DROP AS
        SELECT g.i, p.id AS prediction_id, p.label,
               CASE WHEN g.u6 < {error} THEN 'incorrect' ELSE 'correct' END AS verdict,
               1 + floor(g.u7 * 3)::int AS n_labels, g.locale_idx, g.u5
        FROM bench_gen g
        JOIN feedback_prediction p
          ON p.project_id = %s AND p.external_id = 'bl{seed}-' || lpad(g.i::text, 8, '0')
        """,
        [project_id],
    )
    locale = _lookup("locale_idx", LOCALES)
    pi = _lookup("locale_idx", LOCALE_PI)
    cursor.execute(
        f"""
        INSERT INTO labeling_queueitem
            (queue_id, prediction_id, inclusion_probability, stratum, priority, status,
             labels_count, consensus, created_at, completed_at)
        SELECT %s, prediction_id, {pi}, 'locale=' || {locale}, 0, 'complete', n_labels,
               jsonb_build_object(
                   'method', 'majority', 'verdict', verdict,
                   'true_label', CASE WHEN verdict = 'correct' THEN label
                                      WHEN label = 'approve' THEN 'deny' ELSE 'approve' END,
                   'categories', CASE WHEN verdict = 'correct' THEN '[]'::jsonb
                                      WHEN u5 < 0.3 THEN '["incomplete", "incorrect"]'::jsonb
                                      ELSE '["incorrect"]'::jsonb END,
                   'agreement', CASE WHEN n_labels = 3 AND u5 > 0.7 THEN 0.666667 ELSE 1.0 END,
                   'n_labels', n_labels, 'tie', false),
               timestamptz '2026-11-20 00:00:00+00' + i * interval '1 second',
               timestamptz '2026-11-21 00:00:00+00' + i * interval '1 second'
        FROM bench_items ORDER BY i
        """,
        [queue_id],
    )


def _insert_labels(cursor, queue_id: int, reviewer_ids: list[int]) -> None:
    """Individual labels for 20 % of the items: ``n_labels`` reviewers each."""
    reviewers = "ARRAY[" + ", ".join(str(r) for r in reviewer_ids) + "]::int[]"
    cursor.execute(
        f"""
        INSERT INTO labeling_label
            (item_id, reviewer_id, verdict, categories, true_label, correction, notes,
             seconds_spent, created_at, updated_at)
        SELECT qi.id, ({reviewers})[k],
               CASE WHEN k = 3 AND (qi.consensus->>'agreement')::float < 1
                    THEN CASE WHEN qi.consensus->>'verdict' = 'correct' THEN 'incorrect'
                              ELSE 'correct' END
                    ELSE qi.consensus->>'verdict' END,
               qi.consensus->'categories', qi.consensus->>'true_label',
               CASE WHEN qi.consensus->>'verdict' = 'incorrect' AND k = 1
                    THEN jsonb_build_object('decision', qi.consensus->>'true_label') END,
               '', 5 + k * 3.5, qi.completed_at, qi.completed_at
        FROM labeling_queueitem qi
        JOIN bench_items b ON b.prediction_id = qi.prediction_id
        CROSS JOIN LATERAL generate_series(1, qi.labels_count) AS k
        WHERE qi.queue_id = %s AND (b.u5 * 7 - floor(b.u5 * 7)) < 0.2
        """,
        [queue_id],
    )


def _insert_feedback(cursor, project_id: int, seed: int) -> None:
    """Disputes, negative ratings and reports, more of them where the output was wrong."""
    cursor.execute(
        """
        CREATE TEMP TABLE bench_feedback ON COMMIT DROP AS
        SELECT b.prediction_id, b.i,
               CASE WHEN r < 0.03 THEN 'dispute' WHEN r < 0.09 THEN 'rating' ELSE 'report' END
                   AS kind,
               b.verdict
        FROM (
            SELECT b.*, (b.u5 * 13 - floor(b.u5 * 13))
                        * CASE WHEN b.verdict = 'incorrect' THEN 0.4 ELSE 1.1 END AS r
            FROM bench_items b
        ) b
        WHERE r < 0.12
        """
    )
    cursor.execute(
        f"""
            INSERT INTO feedback_feedback
                (project_id, prediction_id, kind, rating, categories, comment, correction,
                 end_user, segment, idempotency_key, request_hash, status, resolution_note,
                 resolved_at, created_at)
            SELECT %s, f.prediction_id, f.kind,
                   CASE WHEN f.kind = 'rating' THEN -1 END,
                   CASE WHEN f.kind = 'rating' THEN '[]'::jsonb
                        WHEN f.i %% 4 = 0 THEN '["incomplete"]'::jsonb
                        ELSE '["incorrect"]'::jsonb END,
                   CASE WHEN f.kind = 'rating' THEN '' ELSE 'Not what I expected.' END,
                   NULL, md5('user:' || (f.i %% 5000)), '{{}}'::jsonb,
                   'bl{seed}-fb-' || f.i, '',
                   CASE WHEN f.kind = 'dispute' THEN
                        CASE WHEN f.verdict = 'incorrect' THEN 'upheld' ELSE 'rejected' END END,
                   '', NULL, timestamptz '2026-11-10 00:00:00+00' + f.i * interval '1 second'
            FROM bench_feedback f
            ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL
            DO NOTHING
        """,
        [project_id],
    )


if __name__ == "__main__":
    import os
    import sys

    import django

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(ensure_labeled_rows(count))
