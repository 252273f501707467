"""PostgreSQL exports of committed rows read as Arrow columns (ADBC, binary COPY).

The worker reads JSON-lines and Parquet exports through ``labeling.exports.pg_arrow`` when its
rows are committed (a real worker's case); the COPY-text path remains for rows of an outer
transaction and when ``REDRESS_EXPORT_ARROW_READER`` is off. Both must give the very same bytes,
with one stream or several sharing a snapshot.
"""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from django.db import connection

from feedback.models import Prediction
from labeling.exports import engine, pg_arrow
from labeling.exports.request import export_request
from labeling.models import Export
from labeling.services.exports import export_build

from .test_exports import _media, content, make_labeled  # noqa: F401 (_media: autouse fixture)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif("connection.vendor != 'postgresql'"),
    pytest.mark.django_db(transaction=True),
]

# Strings JSON must escape, and some it must not (non-ASCII, U+2028).
AWKWARD = ['tab\there "quoted" back\\slash', "line\nbreak\r\x01\x1f", "ünïcødé \u2028 🙂"]


@pytest.fixture
def committed(project, django_user_model):
    reviewer = django_user_model.objects.create_user("arrow-reviewer", password="pw-123456")
    queue = make_labeled(project, count=1200, reviewer=reviewer)
    for n, text in enumerate(AWKWARD):
        Prediction.objects.filter(external_id=f"labeled-{n * 7:05d}").update(
            external_id=f"{text} {n}", model_version=text, label=text
        )
    return queue


@pytest.fixture
def readers(monkeypatch):
    """Counts the Arrow streams opened (the real reader runs; only the count is added)."""
    opened = []
    real = pg_arrow.record_batches

    def counting(dsn, sql, **kwargs):
        opened.append(sql)
        return real(dsn, sql, **kwargs)

    monkeypatch.setattr(engine, "record_batches", counting)
    monkeypatch.setattr(engine, "PARALLEL_MIN_ROWS", 100)  # several streams for 1,200 rows
    return opened


def built(project, queue, fmt: str, **request) -> Export:
    # As export_create records it, minus the enqueue (the broker is not this test's subject).
    checked = export_request({"queue": queue.pk, "format": fmt, **request})
    export = Export.objects.create(
        project=project, queue=queue, format=checked.format, spec=checked.spec
    )
    export = export_build(export_id=export.pk)
    assert export.status == Export.Status.DONE, export.error
    return export


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("include_labels", [False, True])
def test_arrow_reader_gives_the_bytes_of_copy_text(
    project, committed, readers, settings, fmt, streams, include_labels
):
    settings.REDRESS_EXPORT_STREAMS = streams
    settings.REDRESS_EXPORT_ARROW_READER = False
    text = built(project, committed, fmt, include_labels=include_labels)
    assert readers == []
    settings.REDRESS_EXPORT_ARROW_READER = True
    arrow = built(project, committed, fmt, include_labels=include_labels)
    assert len(readers) == streams
    assert all("%(" not in sql for sql in readers)  # parameters inlined: COPY takes none

    assert content(arrow) == content(text)
    assert arrow.checksum == text.checksum
    assert arrow.rows == text.rows == 1200
    assert arrow.rows_per_split == text.rows_per_split
    assert sum(arrow.rows_per_split.values()) == 1200
    if fmt == "jsonl":
        rows = [json.loads(line) for line in content(arrow).decode().split("\n")[:-1]]
        assert len(rows) == 1200
        by_id = {row["external_id"]: row for row in rows}
        for n, awkward in enumerate(AWKWARD):
            row = by_id[f"{awkward} {n}"]
            assert row["model_version"] == row["predicted_label"] == awkward
        assert ("labels" in rows[0]) is include_labels
    else:
        table = pq.read_table(io.BytesIO(content(arrow)))
        assert table.num_rows == 1200
        ids = set(table.column("external_id").to_pylist())
        assert {f"{awkward} {n}" for n, awkward in enumerate(AWKWARD)} <= ids
        categories = table.column("feedback_categories").to_pylist()
        # Feedback on every 10th prediction; every 20th has a second one (the union, sorted).
        assert categories.count(["incorrect", "unsafe"]) == 60
        assert categories.count(["biased", "incorrect", "unsafe"]) == 60
        assert categories.count([]) == 1080


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_empty_selection_through_the_arrow_reader(project, committed, readers, fmt):
    export = built(project, committed, fmt, filter={"model_version": "no-such-version"})
    assert len(readers) == 1
    assert export.rows == 0
    if fmt == "jsonl":
        assert content(export) == b""
    else:
        assert pq.read_table(io.BytesIO(content(export))).num_rows == 0


def test_the_arrow_reader_connects_with_djangos_parameters():
    dsn = pg_arrow.conninfo(connection)
    assert f"dbname={connection.settings_dict['NAME']}" in dsn
    query = pg_arrow.inline(connection, "SELECT %(n)s::int AS n, %(s)s AS s", {"n": 7, "s": "a'b"})
    with pg_arrow.record_batches(dsn, query, snapshot=None) as reader:
        table = reader.read_all()
    assert table.to_pylist() == [{"n": 7, "s": "a'b"}]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_failure_mid_stream_cancels_every_stream_and_leaves_nothing(
    project, committed, readers, settings, fmt
):
    import tempfile
    from pathlib import Path

    from django.core.files.storage import default_storage

    settings.REDRESS_EXPORT_STREAMS = 2
    reference = built(project, committed, fmt)
    settings.REDRESS_EXPORT_MAX_BYTES = reference.size_bytes // 3  # fails in the first stream

    checked = export_request({"queue": committed.pk, "format": fmt})
    export = Export.objects.create(
        project=project, queue=committed, format=checked.format, spec=checked.spec
    )
    export = export_build(export_id=export.pk)

    assert export.status == Export.Status.FAILED
    assert "REDRESS_EXPORT_MAX_BYTES" in export.error
    assert export.checksum == "" and not export.file
    assert len(readers) == 4  # two streams each time: the second one ran, and was stopped
    # No spool or half file left behind, and only the reference reached storage.
    assert not list(Path(tempfile.gettempdir()).glob(f"{engine.temp_prefix(export)}*"))
    assert default_storage.listdir(f"exports/{project.slug}")[1] == [
        reference.file.name.rsplit("/", 1)[1]
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_comments_and_a_time_split_read_the_same_both_ways(
    project, committed, readers, settings, fmt
):
    from feedback.models import Feedback

    # Comments hold commas, quotes and line breaks: JSON text on the COPY CSV path, a text
    # array on the Arrow reader's.
    for n, feedback in enumerate(Feedback.objects.filter(project=project).order_by("id")):
        Feedback.objects.filter(pk=feedback.pk).update(comment=f'say "{n}", then\nstop' * (n % 2))
    request = {
        "include": ["comments"],
        "split": {
            "by": "time",
            "validation_from": "2000-01-01T00:00:00Z",
            "test_from": "2100-01-01T00:00:00Z",
        },
    }
    settings.REDRESS_EXPORT_STREAMS = 2
    settings.REDRESS_EXPORT_ARROW_READER = False
    text = built(project, committed, fmt, **request)
    settings.REDRESS_EXPORT_ARROW_READER = True
    arrow = built(project, committed, fmt, **request)

    assert len(readers) == 2
    assert content(arrow) == content(text)
    assert (
        arrow.rows_per_split == text.rows_per_split == {"train": 0, "validation": 1200, "test": 0}
    )
    if fmt == "parquet":
        comments = pq.read_table(io.BytesIO(content(arrow))).column("feedback_comments")
    else:
        lines = content(arrow).decode().split("\n")[:-1]
        comments = [json.loads(line)["feedback_comments"] for line in lines]
    comments = comments.to_pylist() if fmt == "parquet" else comments
    assert sum(1 for c in comments if c) == 90  # 3 predictions of 4 with feedback have one
    assert any('say "1", then\nstop' in c for c in comments)
