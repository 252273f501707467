"""Audits over REST: who may ask, what a bad request gets, the reports and the comparison."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rest_framework.test import APIClient

from feedback.models import Membership
from labeling.models import Audit, Queue
from tests.conftest import client_for, token_for
from tests.labeling.test_audits import CLASSES, Row, load_rows

pytestmark = pytest.mark.django_db


def disparity_rows(bad: str = "de-DE") -> list[Row]:
    rows = []
    for locale, count in (("en-US", 300), ("de-DE", 200), ("xx", 10)):
        wrong = 0.30 if locale == bad else 0.10
        for i in range(count):
            label = "approve" if i % 2 else "deny"
            rows.append(
                Row(
                    segment={"locale": locale, "device": "ios" if i % 3 else "web"},
                    verdict="incorrect" if i < wrong * count else "correct",
                    predicted=label,
                    true_label=label,
                    pi=0.5 if locale == "en-US" else 1.0,
                )
            )
    return rows


@pytest.fixture
def queue(project):
    queue = Queue.objects.create(project=project, name="loans", label_choices=CLASSES)
    load_rows(project, queue, disparity_rows())
    return queue


def post(client: APIClient, body) -> object:
    return client.post("/api/v1/audits", data=json.dumps(body), content_type="application/json")


def body(project, queue, **extra):
    return {
        "project": project.slug,
        "source": {"queue": queue.pk},
        "segments": ["locale", "device"],
        "intersectional": True,
        "positive_label": "approve",
        **extra,
    }


def errors(response) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in response.json()["errors"]]


# --- creating and reading ----------------------------------------------------------------------


def test_a_data_key_creates_a_small_audit_and_reads_it(data_client, project, queue):
    response = post(data_client, body(project, queue))

    assert response.status_code == 201, response.content
    created = response.json()
    assert created["status"] == "done"
    assert created["project"] == project.slug
    assert created["source"] == {"queue": queue.pk}
    assert created["params"]["segments"] == ["locale", "device"]
    assert created["params"]["min_n"] == 30 and created["params"]["weighted"] is True
    assert created["overall"]["n"] == 510
    labels = [s["label"] for s in created["segments"]]
    assert labels[:3] == ["locale=de-DE", "locale=en-US", "locale=xx"]
    assert "locale=de-DE, device=web" in labels
    de = next(s for s in created["segments"] if s["label"] == "locale=de-DE")
    assert de["segment"] == {"locale": "de-DE"}
    assert de["metrics"]["error_rate"]["flagged"] is True
    assert set(de["metrics"]) >= {
        "error_rate",
        "dispute_rate",
        "negative_feedback_rate",
        "accuracy",
        "selection_rate",
        "fpr",
        "fnr",
        "precision:approve",
        "recall:deny",
    }
    xx = next(s for s in created["segments"] if s["label"] == "locale=xx")
    assert xx["insufficient"] is True and xx["metrics"]["error_rate"]["value"] is None

    read = data_client.get(f"/api/v1/audits/{created['id']}")

    assert read.status_code == 200
    assert read.json()["segments"] == created["segments"]
    listing = data_client.get("/api/v1/audits")
    assert [a["id"] for a in listing.json()["results"]] == [created["id"]]


def test_a_data_scientist_creates_an_audit_as_themselves(project, queue, member):
    client = client_for(token=member.token)

    response = post(client, body(project, queue, intersectional=False))

    assert response.status_code == 201, response.content
    assert response.json()["requested_by"] == member.username
    assert Audit.objects.get().requested_by == member


def test_a_large_source_is_accepted_for_a_worker(data_client, project, queue, settings):
    settings.REDRESS_AUDIT_INLINE_ROWS = 100

    response = post(data_client, body(project, queue))

    assert response.status_code == 202, response.content
    audit = Audit.objects.get()
    assert response.json() == {"id": audit.pk, "status": "pending"}
    report = data_client.get(f"/api/v1/audits/{audit.pk}/report?format=md")
    assert report.status_code == 409
    assert errors(report) == [("status", "not_ready")]
    assert data_client.get(f"/api/v1/audits/{audit.pk}").json()["overall"] is None


# --- who may --------------------------------------------------------------------------------------


def test_ingest_keys_are_refused(ingest_client, project, queue, data_client):
    audit_id = post(data_client, body(project, queue)).json()["id"]

    assert post(ingest_client, body(project, queue)).status_code == 403
    assert ingest_client.get(f"/api/v1/audits/{audit_id}").status_code == 403
    assert ingest_client.get(f"/api/v1/audits/{audit_id}/report").status_code == 403
    assert APIClient().get(f"/api/v1/audits/{audit_id}").status_code == 401


def test_reviewers_are_refused_and_strangers_see_nothing(
    project, queue, data_client, make_reviewer
):
    audit_id = post(data_client, body(project, queue)).json()["id"]
    reviewer = make_reviewer("rita", role=Membership.Role.REVIEWER)
    reviewer_client = client_for(token=token_for(reviewer))

    assert reviewer_client.get(f"/api/v1/audits/{audit_id}").status_code == 403
    assert post(reviewer_client, body(project, queue)).status_code == 403

    stranger = APIClient()
    stranger.force_authenticate(
        Membership.objects.model.user.field.related_model.objects.create(username="stranger")
    )
    assert stranger.get(f"/api/v1/audits/{audit_id}").status_code == 404
    response = post(stranger, body(project, queue))
    assert response.status_code == 404 and errors(response) == [("project", "not_found")]


def test_other_projects_are_404(project, other_project, queue, make_key):
    other_client = client_for(make_key(other_project, ["data"]))
    own_client = client_for(make_key(project, ["data"]))
    audit_id = post(own_client, body(project, queue)).json()["id"]
    other_queue = Queue.objects.create(project=other_project, name="theirs")

    assert other_client.get(f"/api/v1/audits/{audit_id}").status_code == 404
    assert other_client.get(f"/api/v1/audits/{audit_id}/report?format=csv").status_code == 404
    assert post(other_client, body(project, queue)).status_code == 404
    response = post(own_client, body(project, other_queue))
    assert response.status_code == 404
    assert errors(response) == [("source.queue", "not_found")]


# --- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"segments": ["locale", "bad key!"]}, [("segments[1]", "invalid")]),
        ({"segments": [7]}, [("segments[0]", "invalid_type")]),
        ({"segments": ["locale", "locale"]}, [("segments[1]", "duplicate")]),
        ({"segments": []}, [("segments", "invalid_type")]),
        ({"segments": ["a", "b", "c", "d", "e", "f"]}, [("segments", "too_many")]),
        ({"min_n": "30"}, [("min_n", "invalid_type")]),
        ({"min_n": 0}, [("min_n", "out_of_range")]),
        ({"min_n": True}, [("min_n", "invalid_type")]),
        ({"tolerance": 1.5}, [("tolerance", "out_of_range")]),
        ({"confidence": 1}, [("confidence", "out_of_range")]),
        ({"confidence": "high"}, [("confidence", "invalid_type")]),
        ({"weighted": "yes"}, [("weighted", "invalid_type")]),
        ({"intersectional": 1}, [("intersectional", "invalid_type")]),
        ({"source": {"queue": "one"}}, [("source.queue", "invalid_type")]),
        ({"source": {}}, [("source", "invalid")]),
        ({"source": []}, [("source", "invalid_type")]),
        ({"source": {"queue": 1, "export": 2}}, [("source", "invalid")]),
        (
            {"source": {"goldset": "g"}},
            [("source.version", "required"), ("source.model_version", "required")],
        ),
        ({"positive_label": "maybe"}, [("positive_label", "invalid_choice")]),
        ({"positive_label": 3}, [("positive_label", "invalid_type")]),
        ({"reference": {"country": "DE"}}, [("reference.country", "unknown_key")]),
        ({"reference": "worst"}, [("reference", "invalid")]),
        (
            {"reference": {"locale": "en-US", "device": "ios"}, "intersectional": False},
            [("reference", "needs_intersectional")],
        ),
        ({"colour": "red"}, [("colour", "unknown_field")]),
        ({"project": 5}, [("project", "invalid_type")]),
    ],
)
def test_refusals_name_the_field(data_client, project, queue, change, expected):
    request = body(project, queue)
    request.update(change)
    if "source" in change and change["source"] == {"queue": "one"}:
        request["source"] = {"queue": "one"}

    response = post(data_client, request)

    assert response.status_code == 400, response.content
    assert errors(response) == expected
    assert Audit.objects.count() == 0


def test_every_problem_is_listed_at_once(data_client, project, queue):
    response = post(
        data_client,
        {"project": project.slug, "segments": ["ok", ""], "min_n": -1, "tolerance": None},
    )

    assert response.status_code == 400
    assert errors(response) == [
        ("source", "required"),
        ("segments[1]", "invalid_type"),
        ("min_n", "out_of_range"),
        ("tolerance", "invalid_type"),
    ]


def test_non_object_bodies_and_missing_project(data_client, project, queue):
    assert errors(post(data_client, [1, 2])) == [(None, "invalid_type")]
    response = post(data_client, {"source": {"queue": queue.pk}, "segments": ["locale"]})
    assert response.status_code == 400 and errors(response) == [("project", "required")]


def test_positive_label_needs_label_choices(data_client, project):
    plain = Queue.objects.create(project=project, name="chat")

    response = post(data_client, body(project, plain, intersectional=False))

    assert response.status_code == 400
    assert errors(response) == [("positive_label", "no_labels")]


def test_unknown_gold_sets_and_exports(data_client, project):
    response = post(
        data_client,
        {
            "project": project.slug,
            "segments": ["locale"],
            "source": {"goldset": "nope", "version": 1, "model_version": "v1"},
        },
    )
    assert response.status_code == 404 and errors(response) == [("source.goldset", "not_found")]
    response = post(
        data_client, {"project": project.slug, "segments": ["locale"], "source": {"export": 999}}
    )
    assert response.status_code == 404 and errors(response) == [("source.export", "not_found")]


# --- reports ----------------------------------------------------------------------------------


def test_reports_in_three_formats(data_client, project, queue):
    audit_id = post(data_client, body(project, queue, intersectional=False)).json()["id"]
    url = f"/api/v1/audits/{audit_id}/report"

    as_json = data_client.get(url, {"format": "json"})
    as_csv = data_client.get(url, {"format": "csv"})
    as_md = data_client.get(url, {"format": "md"})
    default = data_client.get(url)

    assert as_json.status_code == as_csv.status_code == as_md.status_code == 200
    assert as_json["Content-Type"].startswith("application/json")
    assert json.loads(as_json.content)["id"] == audit_id
    assert default.content == as_json.content
    assert as_csv["Content-Type"].startswith("text/csv")
    assert as_csv["Content-Disposition"] == f'attachment; filename="audit-{audit_id}.csv"'
    rows = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
    de_error = next(
        r for r in rows if r["segment"] == "locale=de-DE" and r["metric"] == "error_rate"
    )
    assert float(de_error["value"]) == pytest.approx(0.30)
    assert de_error["flagged"] == "true" and de_error["direction"] == "worse"
    assert rows[0]["segment"] == "overall"
    xx = next(r for r in rows if r["segment"] == "locale=xx" and r["metric"] == "error_rate")
    assert (xx["insufficient"], xx["value"]) == ("true", "")
    markdown = as_md.content.decode()
    assert as_md["Content-Type"].startswith("text/markdown")
    for heading in (
        "**Scope.**",
        "**Data.**",
        "**Method.**",
        "**Flagged segments.**",
        "**Caveats.**",
    ):
        assert heading in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert table[0].startswith("| `locale=de-DE` | 200 |")  # worst flagged first
    assert table[-1].startswith("| `locale=xx` | 10 |") and "insufficient" in table[-1]
    assert "- `locale=de-DE` (n = 200): **worse**: error rate 30.0% against" in markdown


def test_report_query_parameters_are_checked(data_client, project, queue):
    audit_id = post(data_client, body(project, queue)).json()["id"]

    bad_format = data_client.get(f"/api/v1/audits/{audit_id}/report?format=pdf")
    unknown = data_client.get(f"/api/v1/audits/{audit_id}/report?fmt=md")

    assert bad_format.status_code == 400 and errors(bad_format) == [("format", "invalid_choice")]
    assert unknown.status_code == 400 and errors(unknown) == [("fmt", "unknown_parameter")]


def test_two_audits_side_by_side(data_client, project, queue):
    first = post(data_client, body(project, queue, intersectional=False)).json()["id"]
    second_queue = Queue.objects.create(project=project, name="v2", label_choices=CLASSES)
    load_rows(project, second_queue, disparity_rows(bad="en-US"), prefix="b")
    second = post(data_client, body(project, second_queue, intersectional=False)).json()["id"]

    response = data_client.get(f"/api/v1/audits/{second}/compare?against={first}")

    assert response.status_code == 200, response.content
    comparison = response.json()
    assert (comparison["a"], comparison["b"]) == (first, second)
    rows = {row["label"]: row for row in comparison["rows"]}
    assert rows["locale=de-DE"]["change"] == pytest.approx(-0.20)
    assert rows["locale=en-US"]["change"] == pytest.approx(0.20)
    assert rows["locale=en-US"]["change_ci_low"] > 0
    assert rows["locale=xx"]["change"] is None
    assert comparison["input_differences"] == ["the audits read different sources"]
    bad = data_client.get(f"/api/v1/audits/{second}/compare?against=x")
    assert bad.status_code == 400 and errors(bad) == [("against", "invalid_type")]


def test_the_schema_describes_the_audit_endpoints():
    document = APIClient().get("/api/schema/", {"format": "json"}).json()

    operations = {
        op["operationId"]: (method.upper(), path)
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    assert operations["audits_create"] == ("POST", "/api/v1/audits")
    assert operations["audits_retrieve"] == ("GET", "/api/v1/audits/{id}")
    assert operations["audits_report"] == ("GET", "/api/v1/audits/{id}/report")
    create = document["paths"]["/api/v1/audits"]["post"]["responses"]
    assert {"201", "202", "400", "403", "404"} <= set(create)
