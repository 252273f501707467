"""Files a data scientist trains on, read back by pyarrow, the csv module and json: the manifest
inside the file and beside it, one column per segment key, timestamps, a time split, where each
row came from (queue, item, stratum, π), comments on request, one JSON style, one row order.

Builds run the real service: on PostgreSQL through COPY (and, for committed rows, the Arrow
reader, see ``test_exports_arrow``), on SQLite through the ORM; the ``portable=True`` builds force
the ORM path on PostgreSQL too, so the paths are compared byte for byte there.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.db import connection
from django.utils import timezone

from feedback.models import Feedback, Prediction
from labeling.exports.engine import MANIFEST_KEY
from labeling.exports.request import export_request
from labeling.exports.writers import canonical
from labeling.models import Export, GoldItem, GoldSet, GoldSetVersion, Queue, QueueItem
from labeling.services.exports import export_build, export_create
from tests.conftest import client_for

from .test_exports import _media, build, content, jsonl_rows, make_labeled  # noqa: F401

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
POSTGRES_ONLY = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="compares the PostgreSQL COPY path"
)


@pytest.fixture
def labeled(project, django_user_model):
    """240 completed items, predictions one hour apart from T0, feedback (with comments) on some,
    one prediction reviewed in two queues, items created out of prediction order."""
    reviewer = django_user_model.objects.create_user("files-reviewer", password="pw-123456")
    queue = make_labeled(project, count=240, reviewer=reviewer)
    predictions = list(
        Prediction.objects.filter(project=project)
        .exclude(external_id__endswith="-open")
        .order_by("id")
    )
    for n, prediction in enumerate(predictions):
        prediction.occurred_at = T0 + dt.timedelta(hours=n, microseconds=n * 1000)
    Prediction.objects.bulk_update(predictions, ["occurred_at"])
    # Feedback times: the first one is what the export reports.
    for n, feedback in enumerate(Feedback.objects.filter(project=project).order_by("id")):
        Feedback.objects.filter(pk=feedback.pk).update(
            created_at=T0 + dt.timedelta(days=30, minutes=-n),
            comment=f'comment {n}, with a comma: and a "quote"' if n % 4 != 3 else "",
        )
    # A second queue reviewing the last predictions again, its items created in reverse order:
    # item ids then disagree with prediction ids, and one prediction has two rows.
    second = Queue.objects.create(project=project, name="second")
    for prediction in reversed(predictions[-5:]):
        QueueItem.objects.create(
            queue=second,
            prediction=prediction,
            inclusion_probability=0.2,
            stratum="all",
            status=QueueItem.Status.COMPLETE,
            labels_count=2,
            completed_at=T0 + dt.timedelta(days=40),
            consensus={"verdict": "correct", "agreement": 1.0, "n_labels": 2, "categories": []},
        )
    return queue


@pytest.fixture
def gold(project, labeled):
    """A published gold version sourcing two predictions of the first day."""
    gold_set = GoldSet.objects.create(project=project, slug="core", name="Core")
    version = GoldSetVersion.objects.create(gold_set=gold_set, number=1)
    for external_id in ("labeled-00002", "labeled-00004"):
        prediction = Prediction.objects.get(external_id=external_id)
        GoldItem.objects.create(
            version=version,
            key=external_id,
            input=prediction.input,
            expected_verdict="correct",
            source_prediction_id=prediction.pk,
            source_external_id=external_id,
            source_agreement=1.0,
            source_agreeing_labels=2,
        )
    GoldSetVersion.objects.filter(pk=version.pk).update(
        status="published", checksum="e" * 64, published_at=T0, item_count=2
    )
    return version


def parquet_manifest(data: bytes) -> dict:
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata.metadata
    return json.loads(metadata[MANIFEST_KEY])


def db_items(project) -> list[QueueItem]:
    return list(
        QueueItem.objects.filter(
            queue__project=project, status="complete", gold_item=None
        ).select_related("prediction")
    )


# --- 1. the manifest, in the file and beside it ---------------------------------------------


@pytest.mark.django_db
def test_parquet_metadata_carries_the_manifest(project, labeled, gold):
    export = build(
        project,
        format="parquet",
        filter={"model_version": "v2"},
        split={"seed": 7, "train": 0.7, "validation": 0.2, "test": 0.1},
    )
    data = content(export)
    manifest = parquet_manifest(data)
    table = pq.read_table(io.BytesIO(data))

    assert manifest["filter"] == {"model_version": "v2"}
    assert manifest["split"] == {
        "by": "hash",
        "train": 0.7,
        "validation": 0.2,
        "test": 0.1,
        "key": "external_id",
        "seed": 7,
    }
    assert manifest["seed"] == 7
    assert manifest["gold_versions"] == [{"gold_set": "core", "version": 1, "checksum": "e" * 64}]
    assert manifest["code_version"] and manifest["code_version"] == export.manifest["code_version"]
    expected_rows = sum(1 for i in db_items(project) if i.prediction.model_version == "v2")
    assert manifest["rows"] == table.num_rows == export.rows == expected_rows
    assert manifest["rows_per_split"] == export.rows_per_split
    assert sum(manifest["rows_per_split"].values()) == expected_rows
    assert [c["name"] for c in manifest["columns"]] == table.column_names
    assert manifest["order"].startswith("prediction id, then queue item id")
    assert manifest["encoding"]["timestamp"] == "timestamp[us, UTC]"
    # What the stored manifest adds is this build's own: its id, the file's sha256.
    assert {k: v for k, v in export.manifest.items() if k in manifest} == manifest
    assert export.manifest["export"] == export.pk
    assert export.manifest["sha256"] == export.checksum
    assert "export" not in manifest and "sha256" not in manifest


@pytest.mark.django_db
def test_the_manifest_downloads_beside_the_file(
    project, other_project, labeled, data_client, make_key
):
    response = data_client.post(
        "/api/v1/exports",
        {"project": project.slug, "queue": labeled.pk, "format": "csv", "include": ["comments"]},
        format="json",
    )
    export_id = response.json()["id"]
    pending = data_client.get(f"/api/v1/exports/{export_id}/manifest")
    export_build(export_id=export_id)
    polled = data_client.get(f"/api/v1/exports/{export_id}").json()
    download = data_client.get(f"/api/v1/exports/{export_id}/manifest")
    other = client_for(make_key(other_project, ["data"])).get(
        f"/api/v1/exports/{export_id}/manifest"
    )

    assert pending.status_code == 409 and pending.json()["errors"][0]["code"] == "not_done"
    assert download.status_code == 200
    assert download["Content-Type"] == "application/json"
    assert f'filename="export-{export_id}.manifest.json"' in download["Content-Disposition"]
    manifest = json.loads(download.content)
    assert polled["manifest_url"].endswith(f"/api/v1/exports/{export_id}/manifest")
    assert manifest["export"] == export_id
    assert manifest["sha256"] == polled["checksum"]
    assert manifest["rows"] == polled["rows"] == 240
    assert manifest["include_comments"] is True
    # CSV says how its nested values are written.
    assert manifest["encoding"]["json"] == "JSON text (parse it: json.loads)"
    assert other.status_code == 404


@pytest.mark.django_db
def test_the_manifest_endpoint_is_in_the_openapi_schema(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/exports/{id}/manifest"]["get"]
    assert operation["operationId"] == "exports_manifest"
    assert "redress.manifest" in operation["responses"]["200"]["description"]
    gold = schema["paths"]["/api/v1/goldsets/{slug}/versions/{number}/manifest"]["get"]
    assert gold["operationId"] == "goldsets_versions_manifest"
    split = schema["components"]["schemas"]["ExportSplitRequest"]["properties"]
    assert {"by", "validation_from", "test_from"} <= set(split)


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_a_gold_snapshot_carries_its_version_and_checksum(data_client, project, gold, fmt):
    response = data_client.get(f"/api/v1/goldsets/core/versions/1/export?format={fmt}")
    data = b"".join(response.streaming_content)
    sidecar = data_client.get("/api/v1/goldsets/core/versions/1/manifest")

    assert response["X-Goldset-Version"] == "1"
    assert response["X-Goldset-Checksum"] == "e" * 64
    assert sidecar.status_code == 200
    beside = json.loads(sidecar.content)
    assert (beside["gold_set"], beside["version"], beside["checksum"]) == ("core", 1, "e" * 64)
    assert beside["item_count"] == 2
    if fmt == "parquet":
        inside = parquet_manifest(data)
        assert inside == beside
        table = pq.read_table(io.BytesIO(data))
        assert table.column("source_agreeing_labels").to_pylist() == [2, 2]
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in data.decode().splitlines()]
        assert [r["source_agreeing_labels"] for r in rows] == [2, 2]
    else:
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        assert [r["source_agreeing_labels"] for r in rows] == ["2", "2"]
    # A draft has no snapshot, nor a manifest.
    GoldSetVersion.objects.create(gold_set=gold.gold_set, number=2, parent=gold)
    assert data_client.get("/api/v1/goldsets/core/versions/2/manifest").status_code == 409
    assert data_client.get("/api/v1/goldsets/core/versions/9/manifest").status_code == 404


# --- 2. segment columns; JSON in CSV and JSONL -----------------------------------------------


@pytest.mark.django_db
def test_one_column_per_segment_key_beside_segment(project, labeled):
    jsonl = jsonl_rows(build(project, format="jsonl"))
    table = pq.read_table(io.BytesIO(content(build(project, format="parquet"))))
    named = jsonl_rows(build(project, format="jsonl", segment_columns=["locale"]))

    assert list(jsonl[0])[7:10] == ["segment", "segment.device", "segment.locale"]
    assert table.column_names[7:10] == ["segment", "segment.device", "segment.locale"]
    assert table.schema.field("segment.locale").type == pa.string()
    for row in jsonl:
        assert row["segment.locale"] == row["segment"]["locale"]
        assert row["segment.device"] == row["segment"]["device"]
    assert table.column("segment.locale").to_pylist() == [r["segment.locale"] for r in jsonl]
    assert [k for k in named[0] if k.startswith("segment.")] == ["segment.locale"]


@pytest.mark.django_db
def test_a_missing_segment_key_is_null(project, labeled):
    Prediction.objects.filter(external_id="labeled-00001").update(segment={"locale": "en-US"})
    rows = {r["external_id"]: r for r in jsonl_rows(build(project, format="jsonl"))}
    assert rows["labeled-00001"]["segment.device"] is None
    assert rows["labeled-00001"]["segment.locale"] == "en-US"


@pytest.mark.django_db
def test_nested_values_are_json_text_in_csv_and_objects_in_jsonl(project, labeled):
    jsonl = jsonl_rows(build(project, format="jsonl"))
    export = build(project, format="csv")
    records = list(csv.DictReader(io.StringIO(content(export).decode(), newline="")))

    assert isinstance(jsonl[0]["input"], dict)
    assert isinstance(jsonl[0]["segment"], dict)
    assert isinstance(records[0]["input"], str)
    for record, row in zip(records, jsonl, strict=True):
        assert json.loads(record["input"]) == row["input"]
        assert json.loads(record["segment"]) == row["segment"]
    assert export.manifest["encoding"]["json"] == "JSON text (parse it: json.loads)"
    assert build(project, format="jsonl").manifest["encoding"]["json"].startswith("a JSON value")


# --- 3. timestamps; the time split -----------------------------------------------------------


def iso(value):
    return None if value is None else value.astimezone(dt.UTC).isoformat()


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_timestamps_of_the_prediction_the_first_feedback_and_the_consensus(project, labeled, fmt):
    export = build(project, format=fmt)
    if fmt == "jsonl":
        rows = jsonl_rows(export)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(content(export).decode(), newline="")))
        rows = [{k: (v or None) for k, v in r.items()} for r in rows]
    else:
        rows = pq.read_table(io.BytesIO(content(export))).to_pylist()
        for row in rows:
            for name in ("occurred_at", "first_feedback_at", "completed_at"):
                row[name] = iso(row[name]) if row[name] else None
    first_feedback = {}
    for feedback in Feedback.objects.filter(project=project):
        seen = first_feedback.get(feedback.prediction_id)
        first_feedback[feedback.prediction_id] = min(filter(None, [seen, feedback.created_at]))
    items = {i.pk: i for i in db_items(project)}

    assert len(rows) == len(items) == 245
    with_feedback = 0
    for row in rows:
        item = items[int(row["item_id"])]
        assert dt.datetime.fromisoformat(row["occurred_at"]) == item.prediction.occurred_at
        assert dt.datetime.fromisoformat(row["completed_at"]) == item.completed_at
        expected = first_feedback.get(item.prediction_id)
        if expected is None:
            assert row["first_feedback_at"] is None
        else:
            with_feedback += 1
            assert dt.datetime.fromisoformat(row["first_feedback_at"]) == expected
    assert with_feedback == 24  # every 10th prediction
    if fmt != "parquet":  # text: UTC, +00:00, no trailing zeros in the fraction
        row = next(r for r in rows if r["external_id"] == "labeled-00000")
        assert row["occurred_at"] == "2026-03-01T12:00:00+00:00"
        row = next(r for r in rows if r["external_id"] == "labeled-00010")
        assert row["occurred_at"] == "2026-03-01T22:00:00.01+00:00"


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_time_split_cuts_by_occurred_at_and_keeps_gold_out_of_train(project, labeled, gold, fmt):
    validation_from = T0 + dt.timedelta(hours=150)
    test_from = T0 + dt.timedelta(hours=200)
    export = build(
        project,
        format=fmt,
        split={
            "by": "time",
            "validation_from": validation_from.isoformat(),
            "test_from": test_from.isoformat(),
        },
    )
    if fmt == "jsonl":
        rows = jsonl_rows(export)
    else:
        rows = pq.read_table(io.BytesIO(content(export))).to_pylist()
        for row in rows:
            row["occurred_at"] = row["occurred_at"].isoformat()

    gold_ids = {"labeled-00002", "labeled-00004"}
    for row in rows:
        occurred = dt.datetime.fromisoformat(row["occurred_at"])
        if row["external_id"] in gold_ids:
            assert row["split"] == "validation"  # of the train period, kept out of train
        elif occurred < validation_from:
            assert row["split"] == "train"
        elif occurred < test_from:
            assert row["split"] == "validation"
        else:
            assert row["split"] == "test"
    # No look-ahead: everything in train happened before anything in validation or test.
    train = [r["occurred_at"] for r in rows if r["split"] == "train"]
    later = [
        r["occurred_at"] for r in rows if r["split"] != "train" and r["external_id"] not in gold_ids
    ]
    assert max(map(dt.datetime.fromisoformat, train)) < min(map(dt.datetime.fromisoformat, later))
    # 150 predictions before validation_from, 2 of them gold; 50 in validation; 40 + 5 in test.
    assert export.rows_per_split == {"train": 148, "validation": 52, "test": 45}
    assert export.manifest["split"] == {
        "by": "time",
        "validation_from": validation_from.isoformat(),
        "test_from": test_from.isoformat(),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("split", "fields"),
    [
        ({"by": "time"}, ["split.validation_from", "split.test_from"]),
        ({"by": "time", "validation_from": "2026-01-01T00:00:00Z"}, ["split.test_from"]),
        (
            {"by": "time", "validation_from": "2026-02-01", "test_from": "2026-01-01T00:00:00Z"},
            ["split.test_from"],
        ),
        (
            {"by": "time", "validation_from": "2026-01-01T00:00Z", "test_from": "soon"},
            ["split.test_from"],
        ),
        (
            {
                "by": "time",
                "validation_from": "2026-01-01T00:00Z",
                "test_from": "2026-02-01T00:00Z",
                "seed": 3,
            },
            ["split.seed"],
        ),
        ({"validation_from": "2026-01-01T00:00Z"}, ["split.validation_from"]),
        ({"by": "date"}, ["split.by"]),
    ],
)
def test_a_bad_time_split_is_400_naming_the_field(project, data_client, split, fields):
    response = data_client.post(
        "/api/v1/exports", {"project": project.slug, "format": "csv", "split": split}, format="json"
    )
    assert response.status_code == 400, response.content
    assert [e["field"] for e in response.json()["errors"]] == fields
    assert Export.objects.count() == 0


# --- 4. where a row comes from; comments on request ------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_queue_item_stratum_and_pi_beside_the_weight(project, labeled, fmt):
    export = build(project, format=fmt)
    if fmt == "jsonl":
        rows = jsonl_rows(export)
    else:
        table = pq.read_table(io.BytesIO(content(export)))
        assert table.schema.field("item_id").type == pa.int64()
        assert table.schema.field("inclusion_probability").type == pa.float64()
        rows = table.to_pylist()
    items = {i.pk: i for i in db_items(project)}

    assert sorted(r["item_id"] for r in rows) == sorted(items)
    for row in rows:
        item = items[row["item_id"]]
        assert row["queue_id"] == item.queue_id
        assert row["stratum"] == item.stratum
        assert row["inclusion_probability"] == item.inclusion_probability
        assert row["weight"] == 1.0 / item.inclusion_probability
        assert row["external_id"] == item.prediction.external_id
    assert {r["queue_id"] for r in rows} == {labeled.pk, labeled.pk + 1}


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_feedback_comments_only_when_asked(project, labeled, fmt):
    plain = build(project, format=fmt)
    asked = build(project, format=fmt, include=["comments"])
    if fmt == "jsonl":
        rows, plain_columns = jsonl_rows(asked), list(jsonl_rows(plain)[0])
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(content(asked).decode(), newline="")))
        for row in rows:
            row["feedback_comments"] = json.loads(row["feedback_comments"])
        plain_columns = content(plain).decode().splitlines()[0].split(",")
    else:
        rows = pq.read_table(io.BytesIO(content(asked))).to_pylist()
        plain_columns = pq.read_table(io.BytesIO(content(plain))).column_names
    expected: dict[str, list[str]] = {}
    for feedback in Feedback.objects.filter(project=project).order_by("id"):
        if feedback.comment:
            expected.setdefault(feedback.prediction.external_id, []).append(feedback.comment)

    assert "feedback_comments" not in plain_columns
    assert len(expected) == 21  # of the 24 predictions with feedback, three have no comment
    for row in rows:
        assert row["feedback_comments"] == expected.get(row["external_id"], [])
    assert sum(1 for r in rows if r["feedback_comments"]) == 21
    assert max(len(comments) for comments in expected.values()) == 2  # in feedback id order


# --- 6. one JSON style; 7. one row order ------------------------------------------------------


def restyled(line: bytes, names: list[str]) -> bytes:
    """A JSON line re-encoded in the one documented style: keys in column order, ", " and ": ",
    nested values as ``canonical`` (PostgreSQL's jsonb text)."""
    row = json.loads(line)
    assert list(row) == names
    return ("{" + ", ".join(f"{json.dumps(n)}: {canonical(row[n])}" for n in names) + "}").encode()


@pytest.mark.django_db
def test_jsonl_lines_have_one_json_style(project, labeled):
    Prediction.objects.filter(external_id="labeled-00003").update(
        input={"zz": {"b": [1, {"y": 2, "x": "a, b: c"}], "aa": None}, "a": "ünï"},
    )
    export = build(project, format="jsonl", include_labels=True, include=["comments"])
    lines = content(export).split(b"\n")[:-1]
    names = [c["name"] for c in export.manifest["columns"]]

    assert len(lines) == 245
    for line in lines:
        assert restyled(line, names) == line
    line = next(x for x in lines if b'"labeled-00003"' in x)
    # jsonb order: shorter keys first ("b" before "aa"), then by bytes.
    nested = '"input": {"a": "ünï", "zz": {"b": [1, {"x": "a, b: c", "y": 2}], "aa": null}}'
    assert nested.encode() in line
    assert b'":{' not in content(export) and b'","' not in content(export)


@pytest.mark.django_db
@POSTGRES_ONLY
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_postgres_copy_and_the_orm_write_the_same_bytes(project, labeled, gold, fmt):
    Prediction.objects.filter(external_id="labeled-00003").update(
        input={"zz": {"b": [1, {"y": 2, "x": "a, b: c"}], "aa": None}, "a": "ünï"},
    )
    request = {"format": fmt, "include_labels": True, "include": ["comments"]}
    fast = build(project, **request)
    portable = build(project, portable=True, **request)

    assert connection.vendor == "postgresql"
    assert content(fast) == content(portable)
    assert fast.checksum == portable.checksum
    assert fast.rows == 245


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_rows_come_by_prediction_id_then_item_id(project, labeled, fmt):
    export = build(project, format=fmt)
    if fmt == "jsonl":
        item_ids = [r["item_id"] for r in jsonl_rows(export)]
    else:
        item_ids = pq.read_table(io.BytesIO(content(export))).column("item_id").to_pylist()
    expected = [pk for _, pk in sorted((i.prediction_id, i.pk) for i in db_items(project))]

    assert item_ids == expected
    # Items were created out of prediction order: item id order alone would differ.
    assert item_ids != sorted(item_ids)
    assert export.manifest["order"].startswith("prediction id, then queue item id")


@pytest.mark.django_db
def test_a_request_through_the_service_records_the_includes(project, labeled):
    checked = export_request(
        {"queue": labeled.pk, "format": "jsonl", "include": ["labels", "comments"]}
    )
    export = export_create(project=project, request=checked)
    assert export.spec["include_labels"] is True and export.spec["include_comments"] is True
    built = export_build(export_id=export.pk)
    row = jsonl_rows(built)[0]
    assert list(row)[-2:] == ["labels", "feedback_comments"]
    assert timezone.is_aware(built.finished_at)


@pytest.mark.django_db
def test_the_admin_asks_for_a_time_split_and_comments_and_links_the_manifest(
    project, labeled, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        created = admin_client.post(
            "/admin/labeling/export/add/",
            {
                "project": project.pk,
                "queue": labeled.pk,
                "format": "jsonl",
                "train": 0.8,
                "validation": 0.1,
                "test": 0.1,
                "split_key": "external_id",
                "seed": 0,
                "split_by": "time",
                "validation_from": "2026-03-05 00:00:00",
                "test_from": "2026-03-08 00:00:00",
                "include_comments": "on",
                "exclude_gold_from_train": "on",
            },
        )
    assert created.status_code == 302, created.content[:2000]
    export = Export.objects.get()
    assert export.spec["split"] == {
        "by": "time",
        "validation_from": "2026-03-05T00:00:00+00:00",
        "test_from": "2026-03-08T00:00:00+00:00",
    }
    assert export.spec["include_comments"] is True
    export = export_build(export_id=export.pk)
    rows = jsonl_rows(export)
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert all("feedback_comments" in r for r in rows)
    page = admin_client.get(f"/admin/labeling/export/{export.pk}/change/")
    assert f"/api/v1/exports/{export.pk}/manifest".encode() in page.content
    manifest = admin_client.get(f"/api/v1/exports/{export.pk}/manifest")
    assert manifest.status_code == 200 and json.loads(manifest.content)["export"] == export.pk
