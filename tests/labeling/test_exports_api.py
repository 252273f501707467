"""Exports over REST, the gold snapshot export, the admin, ``manage.py export``, and a worker
killed mid-build (PostgreSQL)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from feedback.models import Membership
from feedback.services.projects import membership_grant
from labeling.exports.engine import temp_prefix
from labeling.exports.request import export_request
from labeling.models import Export, GoldItem, GoldSet, GoldSetVersion
from labeling.services.exports import (
    export_build,
    export_create,
    exports_recover,
)
from tests.conftest import client_for, token_for

from .test_exports import _media, content, make_labeled  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def labeled(project):
    return make_labeled(project, count=60)


def token_client(project, role):
    membership = membership_grant(project=project, username=f"{role}-{project.slug}", role=role)
    return client_for(token=token_for(membership.user))


def run_pending(export_id: int) -> Export:
    return export_build(export_id=export_id)


# --- create, poll, download ------------------------------------------------------------------


@pytest.mark.django_db
def test_create_poll_and_download_with_a_data_key(project, labeled, data_client):
    response = data_client.post(
        "/api/v1/exports",
        {"project": project.slug, "queue": labeled.pk, "format": "csv"},
        format="json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert set(body) == {"id", "status"} and body["status"] == "pending"

    polled = data_client.get(f"/api/v1/exports/{body['id']}").json()
    assert polled["status"] == "pending" and polled["download_url"] is None
    assert data_client.get(f"/api/v1/exports/{body['id']}/download").status_code == 409

    run_pending(body["id"])
    polled = data_client.get(f"/api/v1/exports/{body['id']}").json()
    assert polled["status"] == "done"
    assert polled["progress"] == 1.0
    assert polled["rows"] == 60
    assert sum(polled["rows_per_split"].values()) == 60
    assert polled["manifest"]["requested_by"].startswith("api-key:")
    assert polled["download_url"].endswith(f"/api/v1/exports/{body['id']}/download")

    download = data_client.get(f"/api/v1/exports/{body['id']}/download")
    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert hashlib.sha256(data).hexdigest() == polled["checksum"] == download["X-Checksum-Sha256"]
    assert download["Content-Type"] == "text/csv"
    assert len(list(csv.DictReader(io.StringIO(data.decode())))) == 60


@pytest.mark.django_db
def test_a_data_scientist_may_export_a_reviewer_and_an_ingest_key_may_not(
    project, labeled, ingest_client
):
    body = {"project": project.slug, "format": "jsonl"}
    scientist = token_client(project, Membership.Role.DATA_SCIENTIST)
    reviewer = token_client(project, Membership.Role.REVIEWER)

    created = scientist.post("/api/v1/exports", body, format="json")
    assert created.status_code == 202
    assert ingest_client.post("/api/v1/exports", body, format="json").status_code == 403
    assert ingest_client.get(f"/api/v1/exports/{created.json()['id']}").status_code == 403
    assert reviewer.post("/api/v1/exports", body, format="json").status_code == 403
    assert reviewer.get(f"/api/v1/exports/{created.json()['id']}").status_code == 404
    assert client_for().post("/api/v1/exports", body, format="json").status_code == 401
    export = Export.objects.get(pk=created.json()["id"])
    assert export.requested_by.username.startswith("data_scientist-")


@pytest.mark.django_db
def test_another_projects_export_is_not_found(project, other_project, labeled, make_key):
    export = export_create(project=project, request=export_request({"format": "jsonl"}))
    other = client_for(make_key(other_project, ["data"]))

    assert other.get(f"/api/v1/exports/{export.pk}").status_code == 404
    assert other.get(f"/api/v1/exports/{export.pk}/download").status_code == 404
    refused = other.post(
        "/api/v1/exports", {"project": project.slug, "format": "jsonl"}, format="json"
    )
    assert refused.status_code == 404
    assert refused.json()["errors"][0]["field"] == "project"
    other_queue = other.post(
        "/api/v1/exports", {"queue": labeled.pk, "format": "jsonl"}, format="json"
    )
    assert other_queue.status_code == 404
    assert other_queue.json()["errors"][0]["field"] == "queue"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"format": "xlsx"}, ["format"]),
        ({}, ["format"]),
        ({"format": "csv", "split": {"train": 1.5}}, ["split.train"]),
        ({"format": "csv", "split": {"train": 0.5}}, ["split"]),
        ({"format": "csv", "split": {"key": "user"}}, ["split.key"]),
        ({"format": "csv", "split": {"seed": "x"}}, ["split.seed"]),
        ({"format": "csv", "split": {"folds": 3}}, ["split.folds"]),
        ({"format": "csv", "filter": {"segment": "de-DE"}}, ["filter.segment"]),
        ({"format": "csv", "filter": {"segment": {"locale": 3}}}, ["filter.segment.locale"]),
        ({"format": "csv", "filter": {"completed_after": "yesterday"}}, ["filter.completed_after"]),
        ({"format": "csv", "filter": {"kinds": []}}, ["filter.kinds"]),
        ({"format": "csv", "include_labels": "yes"}, ["include_labels"]),
        ({"format": "csv", "queue": "one"}, ["queue"]),
        ({"format": "csv", "colour": "red"}, ["colour"]),
    ],
)
def test_bad_requests_are_400_naming_the_field(project, data_client, body, fields):
    response = data_client.post("/api/v1/exports", {"project": project.slug, **body}, format="json")
    assert response.status_code == 400, response.content
    assert [e["field"] for e in response.json()["errors"]] == fields
    assert Export.objects.count() == 0


@pytest.mark.django_db
def test_a_body_that_is_not_an_object_is_400(data_client):
    response = data_client.post("/api/v1/exports", [1, 2], format="json")
    assert response.status_code == 400


# --- gold snapshot ---------------------------------------------------------------------------


@pytest.fixture
def gold_versions(project):
    gold_set = GoldSet.objects.create(project=project, slug="eval", name="Eval")
    published = GoldSetVersion.objects.create(gold_set=gold_set, number=1)
    for n in range(30):
        GoldItem.objects.create(
            version=published,
            key=f"k-{29 - n:03d}",  # created out of key order on purpose
            input={"q": f"question {n}", "nested": {"b": 1, "a": [n, "é"]}},
            output={"a": f"answer {n}"},
            expected_verdict="incorrect" if n % 3 == 0 else "correct",
            expected_label="deny" if n % 2 else "approve",
            expected_categories=["incorrect"] if n % 3 == 0 else [],
            segment={"locale": "de-DE"},
            source_external_id=f"pred-{n}",
            source_agreement=0.75,
        )
    GoldSetVersion.objects.filter(pk=published.pk).update(
        status="published", checksum="d" * 64, published_at=timezone.now(), item_count=30
    )
    draft = GoldSetVersion.objects.create(gold_set=gold_set, number=2, parent=published)
    return published, draft


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_published_snapshot_gives_the_same_bytes_every_time(data_client, gold_versions, fmt):
    url = f"/api/v1/goldsets/eval/versions/1/export?format={fmt}"
    first = data_client.get(url)
    second = data_client.get(url)

    assert first.status_code == 200
    one, two = b"".join(first.streaming_content), b"".join(second.streaming_content)
    assert one == two and len(one) > 0
    if fmt == "jsonl":
        rows = [json.loads(line) for line in one.decode().splitlines()]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(one.decode())))
    else:
        table = pq.read_table(io.BytesIO(one))
        assert str(table.schema.field("expected_categories").type) == "list<element: string>"
        rows = table.to_pylist()
    assert [r["key"] for r in rows] == [f"k-{n:03d}" for n in range(30)]
    assert first["X-Goldset-Checksum"] == "d" * 64


@pytest.mark.django_db
def test_a_draft_snapshot_is_409_and_an_unknown_one_404(data_client, gold_versions, make_key):
    assert data_client.get("/api/v1/goldsets/eval/versions/2/export").status_code == 409
    assert data_client.get("/api/v1/goldsets/eval/versions/9/export").status_code == 404
    bad = data_client.get("/api/v1/goldsets/eval/versions/1/export?format=xml")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "format"
    unknown = data_client.get("/api/v1/goldsets/eval/versions/1/export?fmt=csv")
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "fmt"


@pytest.mark.django_db
def test_snapshot_scopes(project, other_project, gold_versions, ingest_client, make_key):
    assert ingest_client.get("/api/v1/goldsets/eval/versions/1/export").status_code == 403
    other = client_for(make_key(other_project, ["data"]))
    assert other.get("/api/v1/goldsets/eval/versions/1/export").status_code == 404
    scientist = token_client(project, Membership.Role.DATA_SCIENTIST)
    assert scientist.get("/api/v1/goldsets/eval/versions/1/export").status_code == 200


# --- admin and command -----------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_lists_exports_with_a_download_link_and_creates_one(
    project, labeled, admin_client, django_capture_on_commit_callbacks
):
    created = export_create(project=project, request=export_request({"format": "jsonl"}))
    done = export_build(export_id=created.pk)
    page = admin_client.get("/admin/labeling/export/")
    assert page.status_code == 200
    assert f"/api/v1/exports/{done.pk}/download".encode() in page.content
    assert done.checksum[:12].encode() in page.content

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = admin_client.post(
            "/admin/labeling/export/add/",
            {
                "project": project.pk,
                "queue": labeled.pk,
                "format": "parquet",
                "train": 0.7,
                "validation": 0.15,
                "test": 0.15,
                "split_key": "segment.locale",
                "seed": 4,
                "exclude_gold_from_train": "on",
            },
        )
    assert created.status_code == 302, created.content[:2000]
    export = Export.objects.exclude(pk=done.pk).get()
    assert export.status == "pending" and export.format == "parquet"
    assert export.spec["split"] == {
        "by": "hash",
        "train": 0.7,
        "validation": 0.15,
        "test": 0.15,
        "key": "segment.locale",
        "seed": 4,
    }
    assert len(callbacks) == 1  # the build task, enqueued after commit


@pytest.mark.django_db
def test_admin_export_form_and_page_read_as_people_expect(
    project, other_project, labeled, admin_client
):
    from labeling.models import Queue

    elsewhere = Queue.objects.create(project=other_project, name="elsewhere")
    form = admin_client.get("/admin/labeling/export/add/").content.decode()

    # no literal "null" in the segment box; date pickers; queues tagged with their project
    assert 'name="segment"' in form and ">null<" not in form and 'value="null"' not in form
    assert form.count('type="datetime-local"') == 4  # completed after/before, the time split
    assert f'value="{labeled.pk}" data-project="{project.pk}"' in form
    assert f'value="{elsewhere.pk}" data-project="{other_project.pk}"' in form
    assert "labeling/export_form.js" in form
    assert "<code>segment.locale</code>" in form

    base = {
        "project": project.pk,
        "format": "jsonl",
        "train": 0.8,
        "validation": 0.1,
        "test": 0.1,
        "split_key": "external_id",
        "seed": 0,
    }
    # a queue of another project is a form error, and nothing is created
    refused = admin_client.post("/admin/labeling/export/add/", {**base, "queue": elsewhere.pk})
    assert refused.status_code == 200
    assert "elsewhere is a queue of another project." in refused.content.decode()
    bad_segment = admin_client.post(
        "/admin/labeling/export/add/", {**base, "queue": labeled.pk, "segment": "de-DE"}
    )
    assert "Not JSON" in bad_segment.content.decode()
    assert not Export.objects.exists()

    created = admin_client.post(
        "/admin/labeling/export/add/",
        {
            **base,
            "queue": labeled.pk,
            "segment": '{"locale": "de-DE"}',
            "completed_after": "2026-01-02T03:04",
        },
    )
    assert created.status_code == 302, created.content[:2000]
    export = Export.objects.get()
    assert export.spec["filter"]["segment"] == {"locale": "de-DE"}
    assert export.spec["filter"]["completed_after"] == "2026-01-02T03:04:00+00:00"

    built = export_build(export_id=export.pk)
    page = admin_client.get(f"/admin/labeling/export/{built.pk}/change/").content.decode()
    assert "100%" in page and ">1.0<" not in page
    assert '<table class="json-table"' in page
    assert "<details><summary>" in page or "<code>" in page


@pytest.mark.django_db
def test_manage_py_export_builds_and_prints_the_checksum(project, labeled, tmp_path):
    out = io.StringIO()
    target = tmp_path / "copy.jsonl"
    call_command(
        "export",
        project.slug,
        "--format",
        "jsonl",
        "--queue",
        str(labeled.pk),
        "--split",
        '{"seed": 3}',
        "--output",
        str(target),
        stdout=out,
    )
    text = out.getvalue()
    export = Export.objects.get()
    assert export.status == "done"
    assert f"sha256: {export.checksum}" in text
    assert "progress 100% (60 of 60 rows)" in text
    assert f"file: {export.file.name}" in text
    assert hashlib.sha256(target.read_bytes()).hexdigest() == export.checksum
    assert len(target.read_bytes().splitlines()) == 60


@pytest.mark.django_db
def test_manage_py_export_refuses_a_bad_split_naming_it(project):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"split\.train"):
        call_command("export", project.slug, "--format", "csv", "--split", '{"train": 2}')


# --- a worker killed mid-build (PostgreSQL: the child process must see committed rows) -------

CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
import django
django.setup()
from django.conf import settings
settings.STORAGES = {storages!r}
settings.REDRESS_EXPORT_ARROW_READER = {arrow}
from labeling.exports import engine, pg_arrow
from labeling.services import exports
engine.PROGRESS_SECONDS = 0       # report at every block written
engine.FLUSH_BYTES = 4096         # small blocks, so there are many
pg_arrow.BATCH_BYTES = 16384      # small Arrow batches too
def die_half_way(rows, total):
    if rows >= total // 2:
        os.kill(os.getpid(), signal.SIGKILL)
exports.export_build(export_id={export_id}, on_progress=die_half_way)
"""


@pytest.mark.postgres
@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("arrow", [True, False], ids=["arrow-reader", "copy-text"])
def test_a_killed_worker_leaves_no_done_export_and_the_retry_finishes(project, settings, arrow):
    queue = make_labeled(project, count=1500)

    def record() -> Export:
        # As export_create records it, minus the enqueue: outside a test transaction the
        # task would reach the real broker, and this test plays the workers itself.
        checked = export_request({"queue": queue.pk, "format": "jsonl"})
        return Export.objects.create(
            project=project, queue=queue, format=checked.format, spec=checked.spec
        )

    reference = export_build(export_id=record().pk)
    export = record()
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
        f"/{database['NAME']}",
    }
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD.format(
                root=str(ROOT), storages=settings.STORAGES, export_id=export.pk, arrow=arrow
            ),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]

    export.refresh_from_db()
    assert export.status == Export.Status.RUNNING  # the dead worker's claim, never "done"
    assert 0 < export.progress < 1
    assert export.checksum == "" and not export.file
    stored = os.listdir(
        Path(settings.STORAGES["default"]["OPTIONS"]["location"]) / "exports" / project.slug
    )
    assert stored == [reference.file.name.rsplit("/", 1)[1]]

    import tempfile

    left = list(Path(tempfile.gettempdir()).glob(f"{temp_prefix(export)}*"))
    assert left  # what the dead worker was writing
    assert exports_recover(stale_after_seconds=0) == 1
    export = export_build(export_id=export.pk)
    assert not any(path.exists() for path in left)  # the retry cleared them
    assert export.status == Export.Status.DONE
    assert export.attempts == 2
    assert export.checksum == reference.checksum
    assert content(export) == content(reference)
