"""Exports: files read back by their real consumers, splits, weights, gold, determinism, faults.

Every build here runs the real service (``export_build``): on PostgreSQL through COPY, on SQLite
through the ORM path. Files are read back with pyarrow, the csv module and json.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from feedback.models import Feedback, Prediction
from labeling.exports.request import export_request
from labeling.exports.rows import arrow_schema, export_columns, iso_timestamp
from labeling.models import Export, GoldItem, GoldSet, GoldSetVersion, Label, Queue, QueueItem
from labeling.selectors.exports import export_items
from labeling.services.exports import (
    export_build,
    export_create,
    export_retry,
    exports_recover,
)
from labeling.splits import GroupUniform, SplitSpec, group_uniform, split_of

LOCALES = ["en-US", "de-DE", "fr-FR", "ja-JP", "pt-BR"]
PI = [0.05, 0.1, 0.25, 0.5, 1.0]


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


def make_labeled(project, *, count: int, name: str = "labeled", reviewer=None) -> Queue:
    """A queue of ``count`` completed items with consensus, π by locale, feedback on some."""
    queue = Queue.objects.create(project=project, name=name, label_choices=["approve", "deny"])
    now = timezone.now()
    predictions = Prediction.objects.bulk_create(
        Prediction(
            project=project,
            external_id=f"{name}-{i:05d}",
            model="screener",
            model_version="v2" if i % 3 else "v1",
            input={"text": f"application {i}", "amount": i * 10, "note": 'quote " back\\slash'},
            output={"decision": "approve" if i % 2 else "deny"},
            label="approve" if i % 2 else "deny",
            confidence=round(0.5 + (i % 50) / 100, 2),
            segment={"locale": LOCALES[i % 5], "device": ["ios", "web"][i % 2]},
            occurred_at=now,
            content_hash=f"{i:064d}",
        )
        for i in range(count)
    )
    items = QueueItem.objects.bulk_create(
        QueueItem(
            queue=queue,
            prediction=p,
            inclusion_probability=PI[i % 5],
            stratum=f"locale={LOCALES[i % 5]}",
            status=QueueItem.Status.COMPLETE,
            labels_count=1,
            completed_at=now - dt.timedelta(minutes=i),
            consensus={
                "method": "majority",
                "verdict": "incorrect" if i % 7 == 0 else "correct",
                "true_label": ("deny" if i % 2 else "approve") if i % 7 == 0 else p.label,
                "categories": ["incomplete", "incorrect"] if i % 7 == 0 else [],
                "agreement": 1.0 if i % 4 else 0.5,
                "n_labels": 1 if i % 4 else 2,
                "tie": False,
            },
        )
        for i, p in enumerate(predictions)
    )
    # One open item: not complete, never exported.
    extra = Prediction.objects.create(
        project=project,
        external_id=f"{name}-open",
        occurred_at=now,
        content_hash="o" * 64,
        segment={"locale": "en-US"},
    )
    QueueItem.objects.create(queue=queue, prediction=extra, inclusion_probability=0.5)
    for i in range(0, count, 10):
        Feedback.objects.create(
            project=project,
            prediction=predictions[i],
            kind="report",
            segment={},
            categories=["incorrect", "unsafe"],
        )
        if i % 20 == 10:  # a second feedback: the export lists the union, sorted, once each
            Feedback.objects.create(
                project=project,
                prediction=predictions[i],
                kind="report",
                segment={},
                categories=["biased", "unsafe"],
            )
    if reviewer is not None:
        Label.objects.bulk_create(
            Label(
                item=items[i],
                reviewer=reviewer,
                verdict=items[i].consensus["verdict"],
                categories=items[i].consensus["categories"],
                true_label=items[i].consensus["true_label"],
                correction={"decision": "fixed", "i": i} if i % 7 == 0 else None,
                seconds_spent=4.5,
            )
            for i in range(0, count, 7)
        )
    return queue


@pytest.fixture
def reviewer(django_user_model):
    return django_user_model.objects.create_user("exp-reviewer", password="pw-123456")


@pytest.fixture
def labeled(project, reviewer):
    return make_labeled(project, count=240, reviewer=reviewer)


@pytest.fixture
def gold(project, labeled):
    """A published gold version sourcing 3 predictions; a hidden gold check in the queue."""
    gold_set = GoldSet.objects.create(project=project, slug="core", name="Core")
    version = GoldSetVersion.objects.create(gold_set=gold_set, number=1)
    sources = list(
        Prediction.objects.filter(
            external_id__in=["labeled-00003", "labeled-00011", "labeled-00100"]
        )
    )
    items = [
        GoldItem.objects.create(
            version=version,
            key=p.external_id,
            input=p.input,
            output=p.output,
            expected_verdict="correct",
            expected_label=p.label or "",
            segment=p.segment,
            source_prediction_id=p.pk,
            source_external_id=p.external_id,
        )
        for p in sources
    ]
    GoldSetVersion.objects.filter(pk=version.pk).update(
        status="published", checksum="c" * 64, published_at=timezone.now(), item_count=3
    )
    # A hidden gold check served in the queue, completed by a reviewer: never exported.
    QueueItem.objects.create(
        queue=labeled,
        gold_item=items[0],
        inclusion_probability=1.0,
        status=QueueItem.Status.COMPLETE,
        completed_at=timezone.now(),
        consensus={"verdict": "correct", "n_labels": 1, "agreement": 1.0},
    )
    return version


def build(project, queue=None, *, portable=None, **request) -> Export:
    request.setdefault("format", "jsonl")
    export = export_create(
        project=project, request=export_request({"queue": queue.pk if queue else None, **request})
    )
    export = export_build(export_id=export.pk, portable=portable)
    assert export.status == Export.Status.DONE, export.error
    return export


def content(export: Export) -> bytes:
    with default_storage.open(export.file.name, "rb") as handle:
        return handle.read()


def jsonl_rows(export: Export) -> list[dict]:
    return [json.loads(line) for line in content(export).decode().splitlines()]


# --- read back by the real consumers ---------------------------------------------------------


@pytest.mark.django_db
def test_jsonl_rows_hold_what_api_md_lists_and_weights_are_one_over_pi(project, labeled, gold):
    export = build(project, labeled)
    rows = jsonl_rows(export)

    items = {
        i.prediction.external_id: i
        for i in QueueItem.objects.filter(
            queue=labeled, status="complete", gold_item=None
        ).select_related("prediction")
    }
    assert len(rows) == 240 == len(items) == export.rows
    assert list(rows[0]) == [
        name
        for name, _, _ in export_columns(
            include_labels=False, segment_keys=("device", "locale")
        )
    ]
    assert {r["external_id"] for r in rows} == set(items)  # the open item and gold check absent
    for row in rows:
        item = items[row["external_id"]]
        assert row["weight"] == 1 / item.inclusion_probability
        assert row["verdict"] == item.consensus["verdict"]
        assert row["true_label"] == item.consensus["true_label"]
        assert row["label_categories"] == item.consensus["categories"]
        assert row["input"] == item.prediction.input
        assert row["segment"] == item.prediction.segment
        assert row["predicted_label"] == item.prediction.label
        assert row["n_labels"] == item.consensus["n_labels"]
    by_id = {r["external_id"]: r for r in rows}
    assert by_id["labeled-00010"]["feedback_categories"] == ["biased", "incorrect", "unsafe"]
    assert by_id["labeled-00011"]["feedback_categories"] == []
    assert by_id["labeled-00014"]["correction"] == {"decision": "fixed", "i": 14}
    assert by_id["labeled-00015"]["correction"] is None
    assert Counter(r["split"] for r in rows) == export.rows_per_split
    assert sum(export.rows_per_split.values()) == 240
    assert export.checksum == hashlib.sha256(content(export)).hexdigest()
    assert export.size_bytes == len(content(export))


@pytest.mark.django_db
def test_csv_round_trips_through_the_csv_module(project, labeled, gold):
    from_jsonl = jsonl_rows(build(project, labeled))
    export = build(project, labeled, format="csv")

    records = list(csv.DictReader(io.StringIO(content(export).decode(), newline="")))

    assert len(records) == len(from_jsonl) == 240
    kinds = {
        name: kind
        for name, kind, _ in export_columns(
            include_labels=False, segment_keys=("device", "locale")
        )
    }
    for record, row in zip(records, from_jsonl, strict=True):
        decoded = {}
        for name, text in record.items():
            kind = kinds[name]
            if text == "":
                decoded[name] = [] if kind == "list" else None
            elif kind in ("json", "list"):
                decoded[name] = json.loads(text)
            elif kind == "float":
                decoded[name] = float(text)
            elif kind in ("int", "bigint"):
                decoded[name] = int(text)
            else:
                decoded[name] = text
        assert decoded == row


@pytest.mark.django_db
def test_parquet_reads_back_with_the_typed_schema(project, labeled, gold):
    from_jsonl = jsonl_rows(build(project, labeled, include_labels=True))
    export = build(project, labeled, format="parquet", include_labels=True)

    table = pq.read_table(io.BytesIO(content(export)))

    assert table.num_rows == 240 == export.rows
    assert table.schema.remove_metadata().equals(
        arrow_schema(export_columns(include_labels=True, segment_keys=("device", "locale")))
    )
    assert str(table.schema.field("feedback_categories").type) == "list<element: string>"
    assert str(table.schema.field("weight").type) == "double"
    assert str(table.schema.field("n_labels").type) == "int32"
    metadata = pq.ParquetFile(io.BytesIO(content(export))).metadata
    assert metadata.num_rows == 240
    for record, row in zip(table.to_pylist(), from_jsonl, strict=True):
        for name in ("input", "output", "segment", "correction", "labels"):
            record[name] = None if record[name] is None else json.loads(record[name])
        for name in ("occurred_at", "first_feedback_at", "completed_at"):
            record[name] = iso_timestamp(record[name])
        assert record == row
    labeled_row = next(r for r in from_jsonl if r["external_id"] == "labeled-00007")
    assert labeled_row["labels"] == [
        {
            "reviewer": Label.objects.get(
                item__prediction__external_id="labeled-00007"
            ).reviewer_id,
            "verdict": "incorrect",
            "categories": ["incomplete", "incorrect"],
            "true_label": "approve" if 7 % 2 == 0 else "deny",
            "correction": {"decision": "fixed", "i": 7},
            "seconds_spent": 4.5,
        }
    ]


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_the_same_request_gives_the_same_bytes(project, labeled, gold, fmt):
    first = build(project, labeled, format=fmt, split={"seed": 11})
    second = build(project, labeled, format=fmt, split={"seed": 11})
    other_seed = build(project, labeled, format=fmt, split={"seed": 12})

    assert first.checksum == second.checksum
    assert content(first) == content(second)
    assert other_seed.checksum != first.checksum
    assert first.manifest["seed"] == 11
    assert first.manifest["code_version"]
    assert first.manifest["rows_per_split"] == first.rows_per_split


# --- splits ----------------------------------------------------------------------------------


def test_split_function_thresholds_and_gold_rescaling():
    spec = SplitSpec(train=0.6, validation=0.3, test=0.1, seed=3)
    assert split_of(0.0, spec) == "train"
    assert split_of(0.5999, spec) == "train"
    assert split_of(0.6, spec) == "validation"
    assert split_of(0.9, spec) == "test"
    # A gold group below train goes to validation under 0.6 * 0.75, to test above.
    assert split_of(0.44, spec, gold=True) == "validation"
    assert split_of(0.46, spec, gold=True) == "test"
    assert split_of(0.7, spec, gold=True) == "validation"
    assert group_uniform(3, "a") == group_uniform(3, "a") != group_uniform(4, "a")


@pytest.mark.django_db
def test_the_database_computes_the_same_uniform_as_python(project, labeled):
    spec = SplitSpec(seed=42)
    rows = (
        export_items(project=project, queue=labeled, filter={})
        .annotate(u=GroupUniform(42, "prediction__external_id"))
        .values_list("prediction__external_id", "u")
    )
    pairs = list(rows)
    assert len(pairs) == 240
    assert all(u == group_uniform(spec.seed, key) for key, u in pairs)


@pytest.mark.django_db
def test_split_proportions_and_disjoint_groups(project):
    queue = make_labeled(project, count=3000, name="big")

    by_id = build(project, queue, split={"seed": 5})
    rows = jsonl_rows(by_id)
    shares = {k: v / len(rows) for k, v in by_id.rows_per_split.items()}
    assert abs(shares["train"] - 0.8) < 0.03
    assert abs(shares["validation"] - 0.1) < 0.02
    assert abs(shares["test"] - 0.1) < 0.02
    for row in rows:
        spec = SplitSpec(seed=5)
        assert row["split"] == split_of(group_uniform(5, row["external_id"]), spec)

    by_locale = build(
        project,
        queue,
        split={"key": "segment.locale", "seed": 1, "train": 0.6, "validation": 0.2, "test": 0.2},
    )
    groups: dict[str, set[str]] = defaultdict(set)
    for row in jsonl_rows(by_locale):
        groups[row["segment"]["locale"]].add(row["split"])
    assert all(len(splits) == 1 for splits in groups.values()), groups
    assert set(groups) == set(LOCALES)
    spec = SplitSpec(train=0.6, validation=0.2, test=0.2, key="segment.locale", seed=1)
    assert {k: v.pop() for k, v in groups.items()} == {
        locale: split_of(group_uniform(1, locale), spec) for locale in LOCALES
    }


@pytest.mark.django_db
def test_gold_rows_leave_train_as_whole_groups_unless_asked(project, labeled, gold):
    gold_ids = {"labeled-00003", "labeled-00011", "labeled-00100"}
    spec = SplitSpec(seed=0)
    # The seed puts at least one gold row in train by its hash, so keeping it out is visible.
    assert any(split_of(group_uniform(0, key), spec) == "train" for key in gold_ids)

    kept_out = {r["external_id"]: r["split"] for r in jsonl_rows(build(project, labeled))}
    assert all(kept_out[key] != "train" for key in gold_ids)
    for key in gold_ids:
        assert kept_out[key] == split_of(group_uniform(0, key), spec, gold=True)

    allowed = build(project, labeled, exclude_gold_from_train=False)
    kept_in = {r["external_id"]: r["split"] for r in jsonl_rows(allowed)}
    assert any(kept_in[key] == "train" for key in gold_ids)
    assert allowed.manifest["gold_groups_kept_out_of_train"] == 0

    # By locale: a locale holding a gold row leaves train entirely.
    by_locale = build(project, labeled, split={"key": "segment.locale", "seed": 2})
    gold_locales = {
        p.segment["locale"] for p in Prediction.objects.filter(external_id__in=gold_ids)
    }
    for row in jsonl_rows(by_locale):
        if row["segment"]["locale"] in gold_locales:
            assert row["split"] != "train"


@pytest.mark.django_db
def test_manifest_records_the_request_and_the_gold_versions_touched(project, labeled, gold, member):
    export = export_create(
        project=project,
        request=export_request({
            "queue": labeled.pk,
            "format": "csv",
            "filter": {"model_version": "v2", "segment": {"device": "web"}},
            "split": {"train": 0.7, "validation": 0.2, "test": 0.1, "seed": 9},
        }),
        actor=member,
    )
    export = export_build(export_id=export.pk)

    manifest = export.manifest
    assert manifest["filter"] == {"model_version": "v2", "segment": {"device": "web"}}
    assert manifest["split"] == {
        "by": "hash",
        "train": 0.7,
        "validation": 0.2,
        "test": 0.1,
        "key": "external_id",
        "seed": 9,
    }
    assert manifest["seed"] == 9
    assert manifest["requested_by"] == member.username
    assert manifest["gold_versions"] == [
        {"gold_set": "core", "version": 1, "checksum": "c" * 64}
    ]  # labeled-00003 and -00011 are v2 and web (odd)
    assert manifest["rows"] == export.rows == 240 // 3 * 2 // 2
    assert manifest["sha256"] == export.checksum
    assert manifest["exclude_gold_from_train"] is True


@pytest.mark.django_db
def test_filters_select_rows(project, labeled):
    later = timezone.now() - dt.timedelta(minutes=100)
    export = build(
        project,
        labeled,
        filter={"completed_after": later.isoformat(), "segment": {"locale": "de-DE"}},
    )
    rows = jsonl_rows(export)
    expected = export_items(
        project=project,
        queue=labeled,
        filter={"completed_after": later.isoformat(), "segment": {"locale": "de-DE"}},
    ).count()
    assert len(rows) == expected == len([i for i in range(240) if i % 5 == 1 and i < 100])
    assert {r["segment"]["locale"] for r in rows} == {"de-DE"}


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_interrupted_build_is_never_done_and_a_retry_finishes_it(project, labeled, settings):
    reference = build(project, labeled, format="csv")
    settings.REDRESS_EXPORT_MAX_BYTES = len(content(reference)) // 2  # fails half-way

    export = export_create(
        project=project, request=export_request({"queue": labeled.pk, "format": "csv"})
    )
    export = export_build(export_id=export.pk)

    assert export.status == Export.Status.FAILED
    assert "REDRESS_EXPORT_MAX_BYTES" in export.error
    assert export.checksum == "" and not export.file and export.rows == 0
    # Nothing half-written reached storage: only the reference export's file is there.
    assert default_storage.listdir(f"exports/{project.slug}")[1] == [
        reference.file.name.rsplit("/", 1)[1]
    ]
    # A second delivery of the task does nothing: the export is not pending.
    assert export_build(export_id=export.pk).status == Export.Status.FAILED

    settings.REDRESS_EXPORT_MAX_BYTES = None
    export = export_retry(export=export)
    assert export.status == Export.Status.PENDING
    export = export_build(export_id=export.pk)
    assert export.status == Export.Status.DONE
    assert export.checksum == reference.checksum
    assert export.attempts == 1


@pytest.mark.django_db
def test_recovery_hands_back_a_lost_build_and_gives_up_after_three(project, labeled):
    export = export_create(
        project=project, request=export_request({"queue": labeled.pk, "format": "jsonl"})
    )
    # A worker claimed it and died: the row says running, nothing else happened.
    Export.objects.filter(pk=export.pk).update(
        status="running", attempts=1, started_at=timezone.now() - dt.timedelta(hours=2)
    )
    assert exports_recover(stale_after_seconds=3600) == 1
    export.refresh_from_db()
    assert export.status == Export.Status.PENDING
    assert export_build(export_id=export.pk).status == Export.Status.DONE

    lost = export_create(
        project=project, request=export_request({"queue": labeled.pk, "format": "jsonl"})
    )
    Export.objects.filter(pk=lost.pk).update(
        status="running", attempts=3, started_at=timezone.now() - dt.timedelta(hours=2)
    )
    exports_recover(stale_after_seconds=3600)
    lost.refresh_from_db()
    assert lost.status == Export.Status.FAILED
    assert "lost" in lost.error
    # A message for an export deleted meanwhile is a no-op, not a crash.
    assert export_build(export_id=lost.pk + 1000) is None


@pytest.mark.django_db
def test_an_empty_selection_gives_an_empty_but_valid_file(project, labeled):
    for fmt in ("jsonl", "csv", "parquet"):
        export = build(project, labeled, format=fmt, filter={"model_version": "none"})
        assert export.rows == 0
        assert export.rows_per_split == {"train": 0, "validation": 0, "test": 0}
        if fmt == "parquet":
            assert pq.read_table(io.BytesIO(content(export))).num_rows == 0
        elif fmt == "csv":
            assert content(export).decode().splitlines()[0].startswith("external_id,model,")
        else:
            assert content(export) == b""


@pytest.mark.django_db
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_postgres_copy_path_and_orm_path_give_the_same_rows(project, labeled, gold):
    fast = jsonl_rows(build(project, labeled, include_labels=True))
    portable = jsonl_rows(build(project, labeled, include_labels=True, portable=True))
    assert fast == portable
    assert not math.isnan(sum(r["weight"] for r in fast))
    assert connection.vendor == "postgresql"
