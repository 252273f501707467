"""Labeling benchmarks (PostgreSQL): sampling 10,000 stratified items from 1,000,000
predictions, and claim-and-label under 32 concurrent reviewers.

Both run against the Django database already configured (the bench database); ``run.py`` calls
them after the intake sections. Standalone, for a quick look:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redress_lbench \\
        .venv/bin/python tests/bench/labeling_bench.py --predictions 1000000
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

LOCALES = ["en-US", "de-DE", "fr-FR", "es-ES", "it-IT", "pt-BR", "ja-JP", "nl-NL"]
LOCALE_WEIGHTS = [40, 20, 12, 10, 8, 5, 3, 2]
DEVICES = ["ios", "android", "web"]


def log(message: str) -> None:
    print(f"[labeling-bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_predictions(project, count: int) -> float:
    """COPY ``count`` predictions with segments into the project; returns seconds taken."""
    from django.db import connection

    rng = random.Random(1)
    started = time.perf_counter()
    buffer = io.StringIO()
    for n in range(count):
        locale = rng.choices(LOCALES, LOCALE_WEIGHTS)[0]
        buffer.write(
            f"{project.pk}\tbench-{n}\tbot\tv1\t{{}}\t{{}}\t\\N\t{rng.random():.4f}\t"
            f'{{"locale": "{locale}", "device": "{rng.choice(DEVICES)}"}}\t'
            "2026-11-20 10:00:00+00\t2026-11-20 10:00:00+00\tx\n"
        )
    buffer.seek(0)
    with connection.cursor() as cursor:
        columns = (
            "project_id, external_id, model, model_version, input, output, label, confidence, "
            "segment, occurred_at, created_at, content_hash"
        )
        with cursor.connection.cursor().copy(
            f"COPY feedback_prediction ({columns}) FROM STDIN"
        ) as copy:
            copy.write(buffer.getvalue())
        cursor.execute("ANALYZE feedback_prediction")
    return time.perf_counter() - started


def bench_sampling(predictions: int = 1_000_000, sample: int = 10_000) -> dict[str, Any]:
    """Stratified draw (by locale, minimum allocation) of ``sample`` from ``predictions``."""
    from feedback.services.projects import project_create
    from labeling.models import Queue, QueueItem, SamplingRun
    from labeling.services.sampling import policy_of, sampling_run_execute

    project = project_create(slug=f"sampling-bench-{uuid.uuid4().hex[:8]}")
    log(f"loading {predictions:,} predictions")
    load_seconds = load_predictions(project, predictions)
    timings = []
    result: dict[str, Any] = {"population": predictions, "sample": sample}
    for attempt, (allocation, strata) in enumerate(
        [("proportional", ["locale"]), ("minimum", ["locale", "device"])]
    ):
        queue = Queue.objects.create(
            project=project,
            name=f"bench-{attempt}",
            strategy="stratified",
            size=sample,
            strata=strata,
            allocation=allocation,
            min_per_stratum=300,
        )
        run = SamplingRun.objects.create(queue=queue, seed=7, policy=policy_of(queue))
        started = time.perf_counter()
        run = sampling_run_execute(run_id=run.pk)
        seconds = time.perf_counter() - started
        assert run.status == "done", run.error
        drawn = QueueItem.objects.filter(queue=queue).count()
        assert drawn == sample, drawn
        timings.append(seconds)
        result[f"{allocation}_by_{'_'.join(strata)}"] = {
            "seconds": round(seconds, 3),
            "strata": len(run.population),
            "items": drawn,
        }
        log(f"{allocation} by {strata}: {seconds:.2f} s for {drawn} items")
    result["load_seconds"] = round(load_seconds, 1)
    result["seconds"] = round(max(timings), 3)
    return result


# --- claims ----------------------------------------------------------------------------------


def _reviewer_loop(args: tuple[Any, ...]) -> dict[str, Any]:
    """One reviewer process: claim, label, repeat until nothing is left (or ``limit`` claims)."""
    queue_id, user_id, settings_module, start, think, *rest = args
    limit = rest[0] if rest else None
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection

    from feedback.errors import Conflict
    from labeling.models import Queue
    from labeling.payloads.labels import label_input
    from labeling.services.claims import queue_claim_next
    from labeling.services.labels import item_label_submit

    queue = Queue.objects.get(pk=queue_id)
    reviewer = get_user_model().objects.get(pk=user_id)
    rng = random.Random(user_id)
    claim_ms: list[float] = []
    label_ms: list[float] = []
    conflicts = 0
    start.wait()
    began = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        lease = queue_claim_next(queue=queue, reviewer=reviewer)
        claim_ms.append((time.perf_counter() - t0) * 1000)
        if lease is None or (limit is not None and len(claim_ms) >= limit):
            break
        if think:  # reading the item; reviewers don't move in lock-step
            time.sleep(think * rng.uniform(0.5, 1.5))
        t1 = time.perf_counter()
        try:
            item_label_submit(
                item_id=lease.item_id,
                reviewer=reviewer,
                answer=label_input({"verdict": "correct", "seconds_spent": 5}),
                categories=set(),
            )
        except Conflict:
            conflicts += 1
        label_ms.append((time.perf_counter() - t1) * 1000)
    elapsed = time.perf_counter() - began
    connection.close()
    return {"claim_ms": claim_ms, "label_ms": label_ms, "conflicts": conflicts, "elapsed": elapsed}


def bench_claims(
    items: int = 4000, reviewers: int = 32, overlap: int = 2, think: float = 0.0
) -> dict[str, Any]:
    """``reviewers`` processes (one connection each) claim and label a queue to the end,
    pausing ``think`` seconds on each item before labeling it."""
    from django.db import connection
    from django.utils import timezone

    from feedback.models import Membership, Prediction
    from feedback.services.projects import membership_grant, project_create
    from labeling.models import Assignment, Label, Queue, QueueItem

    project = project_create(slug=f"claims-bench-{uuid.uuid4().hex[:8]}")
    queue = Queue.objects.create(project=project, name=f"claims-{think}", overlap=overlap)
    now = timezone.now()
    predictions = Prediction.objects.bulk_create(
        Prediction(project=project, external_id=f"c{i}", occurred_at=now, content_hash="x")
        for i in range(items)
    )
    QueueItem.objects.bulk_create(
        QueueItem(queue=queue, prediction=p, inclusion_probability=1.0) for p in predictions
    )
    users = []
    for r in range(reviewers):
        user = membership_grant(
            project=project, username=f"bench-r{r}-{project.slug}", role=Membership.Role.REVIEWER
        ).user
        queue.reviewers.add(user)
        users.append(user.pk)
    connection.close()  # the children open their own

    context = multiprocessing.get_context("fork")
    start = context.Manager().Barrier(reviewers)
    settings_module = os.environ["DJANGO_SETTINGS_MODULE"]
    log(f"{reviewers} reviewers on {items} items, overlap {overlap}, think {think}s")
    wall = time.perf_counter()
    with context.Pool(reviewers) as pool:
        results = pool.map(
            _reviewer_loop, [(queue.pk, u, settings_module, start, think) for u in users]
        )
    wall = time.perf_counter() - wall

    claims = [ms for r in results for ms in r["claim_ms"]]
    labels = [ms for r in results for ms in r["label_ms"]]
    # Duplicates: labels beyond overlap, a reviewer twice on an item, a slot leased twice.
    per_item = Counter(Label.objects.filter(item__queue=queue).values_list("item_id", flat=True))
    pairs = list(Label.objects.filter(item__queue=queue).values_list("item_id", "reviewer_id"))
    over_leased = 0
    leases = defaultdict(list)
    for item_id, leased_at, closed_at in Assignment.objects.filter(item__queue=queue).values_list(
        "item_id", "leased_at", "closed_at"
    ):
        leases[item_id].append((leased_at, closed_at or timezone.now()))
    for intervals in leases.values():
        events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
        live = 0
        for _, delta in events:
            live += delta
            over_leased += live > overlap
    duplicates = (
        sum(1 for n in per_item.values() if n > overlap)
        + (len(pairs) - len(set(pairs)))
        + over_leased
    )
    complete = QueueItem.objects.filter(queue=queue, status="complete").count()
    return {
        "reviewers": reviewers,
        "think_seconds": think,
        "items": items,
        "overlap": overlap,
        "labels": len(pairs),
        "claims": len(claims),
        "claims_per_s": round(len(claims) / wall, 1),
        "labels_per_s": round(len(pairs) / wall, 1),
        "claim_p50_ms": round(percentile(claims, 0.5), 2),
        "claim_p95_ms": round(percentile(claims, 0.95), 2),
        "claim_p99_ms": round(percentile(claims, 0.99), 2),
        "label_p50_ms": round(percentile(labels, 0.5), 2),
        "label_p95_ms": round(percentile(labels, 0.95), 2),
        "mean_claim_ms": round(statistics.fmean(claims), 2),
        "duplicates": duplicates,
        "items_complete": complete,
        "wall_seconds": round(wall, 2),
    }


def bench_claims_after_draw(
    draw: int = 100_000,
    population: int = 120_000,
    reviewers: int = 8,
    claims_per_reviewer: int = 200,
    overlap: int = 2,
) -> dict[str, Any]:
    """Claims right after a large draw: ``draw`` items sampled into a fresh queue, then
    ``reviewers`` processes claim and label at once, ``claims_per_reviewer`` each.

    No ANALYZE after the draw: PostgreSQL plans the first claims with statistics older than the
    draw (the labeling tables are analyzed before it, with an earlier queue's items, as
    autovacuum would have left them; this database runs with autovacuum off, so nothing
    refreshes them meanwhile). The claim must not
    care; ``first_claim_plan`` is the candidate query's plan at the start, as the claim runs it.
    """
    import json

    from django.db import connection, transaction
    from django.utils import timezone

    from feedback.models import Membership
    from feedback.services.projects import membership_grant, project_create
    from labeling.models import Queue, QueueItem, SamplingRun
    from labeling.services.claims import CLAIM_TRANSACTION_SQL, NEXT_ITEM_SQL
    from labeling.services.sampling import policy_of, sampling_run_execute

    project = project_create(slug=f"draw-bench-{uuid.uuid4().hex[:8]}")
    log(f"loading {population:,} predictions")
    load_predictions(project, population)
    queue = Queue.objects.create(
        project=project, name="after-draw", strategy="uniform", size=draw, overlap=overlap
    )
    users = []
    for r in range(reviewers):
        user = membership_grant(
            project=project, username=f"draw-r{r}-{project.slug}", role=Membership.Role.REVIEWER
        ).user
        queue.reviewers.add(user)
        users.append(user.pk)
    # Statistics from before the draw, never refreshed: taken while an earlier queue held a
    # couple of thousand items (with those of empty tables the old claim's plan was a coin toss).
    earlier = Queue.objects.create(project=project, name="earlier", strategy="uniform", size=2000)
    earlier_run = SamplingRun.objects.create(queue=earlier, seed=2, policy=policy_of(earlier))
    assert sampling_run_execute(run_id=earlier_run.pk).status == "done"
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_queueitem, labeling_assignment, labeling_label")
    run = SamplingRun.objects.create(queue=queue, seed=3, policy=policy_of(queue))
    started = time.perf_counter()
    run = sampling_run_execute(run_id=run.pk)
    draw_seconds = time.perf_counter() - started
    assert run.status == "done", run.error
    drawn = QueueItem.objects.filter(queue=queue).count()
    assert drawn == draw, drawn
    log(f"drew {drawn:,} items in {draw_seconds:.1f} s; claiming at once, no ANALYZE")

    now = timezone.now()
    params = {
        "queue": queue.pk,
        "reviewer": users[0],
        "now": now,
        "skip_since": now,
        "overlap": overlap,
        "passed": [],
    }
    with transaction.atomic(), connection.cursor() as cursor:  # rolled back: locks nothing
        cursor.execute(CLAIM_TRANSACTION_SQL, [0])
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + NEXT_ITEM_SQL + " FOR NO KEY UPDATE OF qi"
            " SKIP LOCKED",
            params,
        )
        (raw,) = cursor.fetchone()
        transaction.set_rollback(True)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    top = plan["Plan"]
    scan = top
    while "Index Name" not in scan and scan.get("Plans"):
        scan = scan["Plans"][0]
    first_claim_plan = {
        "index": scan.get("Index Name"),
        "rows_estimated_for_queue": scan.get("Plan Rows"),
        "buffers": top["Shared Hit Blocks"] + top["Shared Read Blocks"],
        "ms": round(plan["Execution Time"], 3),
    }
    connection.close()  # the children open their own

    context = multiprocessing.get_context("fork")
    start = context.Manager().Barrier(reviewers)
    settings_module = os.environ["DJANGO_SETTINGS_MODULE"]
    log(f"{reviewers} reviewers, {claims_per_reviewer} claims each, overlap {overlap}")
    wall = time.perf_counter()
    with context.Pool(reviewers) as pool:
        results = pool.map(
            _reviewer_loop,
            [(queue.pk, u, settings_module, start, 0.0, claims_per_reviewer) for u in users],
        )
    wall = time.perf_counter() - wall
    claims = [ms for r in results for ms in r["claim_ms"]]
    labels = sum(len(r["label_ms"]) for r in results)
    return {
        "drawn": drawn,
        "population": population,
        "draw_seconds": round(draw_seconds, 2),
        "reviewers": reviewers,
        "overlap": overlap,
        "claims": len(claims),
        "labels": labels,
        "labels_per_s": round(labels / wall, 1),
        "first_claims_ms": [round(ms, 2) for ms in results[0]["claim_ms"][:5]],
        "claim_p50_ms": round(percentile(claims, 0.5), 2),
        "claim_p95_ms": round(percentile(claims, 0.95), 2),
        "claim_p99_ms": round(percentile(claims, 0.99), 2),
        "claim_max_ms": round(max(claims), 2),
        "first_claim_plan": first_claim_plan,
        "wall_seconds": round(wall, 2),
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--only", choices=["sampling", "claims", "claims_after_draw"])
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
    report = {}
    if args.only in (None, "sampling"):
        report["sampling"] = bench_sampling(args.predictions)
    if args.only in (None, "claims"):
        report["claims_saturated"] = bench_claims(args.items)
        report["claims_paced"] = bench_claims(args.items // 4, think=0.5)
    if args.only in (None, "claims_after_draw"):
        report["claims_after_draw"] = bench_claims_after_draw()
    print(json.dumps(report, indent=2))
