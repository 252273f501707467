"""GET /api/v1/feedback: filters, segment filters, cursor pagination, constant query count."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from feedback.models import Feedback
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit, predictions_log

pytestmark = pytest.mark.django_db


@pytest.fixture
def corpus(project):
    """Six feedback items over two model versions and two locales."""
    context = project_context(project=project)
    predictions_log(
        context=context,
        items=[
            {"external_id": "a", "model_version": "v1", "segment": {"locale": "de-DE"}},
            {"external_id": "b", "model_version": "v2", "segment": {"locale": "en-US"}},
        ],
    )
    items = [
        {"prediction": "a", "kind": "rating", "rating": -1},
        {"prediction": "a", "kind": "report", "categories": ["unsafe"]},
        {"prediction": "a", "kind": "dispute", "categories": ["biased", "incorrect"]},
        {
            "prediction": "b",
            "kind": "report",
            "categories": ["incorrect"],
            "segment": {"age_band": "65+"},
        },
        {"prediction": "b", "kind": "dispute"},
        {"prediction": "b", "kind": "rating", "rating": 1},
    ]
    results = feedback_submit(context=context, items=items)
    return [r.obj.pk for r in results]


def ids(response):
    assert response.status_code == 200, response.content
    return sorted(item["id"] for item in response.json()["results"])


def test_lists_newest_first_with_all_fields(data_client, corpus):
    body = data_client.get("/api/v1/feedback").json()

    assert [item["id"] for item in body["results"]] == sorted(corpus, reverse=True)
    newest = body["results"][0]
    assert newest["prediction"] == "b"
    assert newest["kind"] == "rating"
    assert set(newest) >= {"id", "kind", "status", "categories", "comment", "segment", "created_at"}


@pytest.mark.parametrize(
    ("query", "positions"),
    [
        ("kind=dispute", [2, 4]),
        ("kind=rating", [0, 5]),
        ("status=open", [2, 4]),
        ("category=incorrect", [2, 3]),
        ("category=incorrect&category=unsafe", [1, 2, 3]),
        ("model_version=v1", [0, 1, 2]),
        ("segment.locale=en-US", [3, 4, 5]),
        ("segment.age_band=65%2B", [3]),
        ("segment.locale=en-US&kind=report", [3]),
        ("segment.locale=fr-FR", []),
    ],
)
def test_filters(data_client, corpus, query, positions):
    assert ids(data_client.get(f"/api/v1/feedback?{query}")) == [corpus[p] for p in positions]


def test_created_window(data_client, corpus):
    Feedback.objects.filter(pk=corpus[0]).update(created_at=timezone.now() - timedelta(days=3))
    cutoff = (timezone.now() - timedelta(days=1)).isoformat().replace("+00:00", "Z")

    assert ids(data_client.get("/api/v1/feedback", {"created_after": cutoff})) == corpus[1:]
    assert ids(data_client.get("/api/v1/feedback", {"created_before": cutoff})) == corpus[:1]


@pytest.mark.parametrize(
    ("query", "field", "code"),
    [
        ("kind=complaint", "kind", "invalid_choice"),
        ("status=closed", "status", "invalid_choice"),
        ("created_after=yesterday", "created_after", "invalid"),
        ("colour=red", "colour", "unknown_parameter"),
        ("segment.bad%20key=x", "segment.bad key", "invalid_key"),
        ("cursor=garbage", "cursor", "invalid"),
    ],
)
def test_bad_query_parameters_are_400(data_client, corpus, query, field, code):
    response = data_client.get(f"/api/v1/feedback?{query}")

    assert response.status_code == 400
    assert (field, code) in {(e["field"], e["code"]) for e in response.json()["errors"]}


def test_cursor_pagination_walks_every_row_once(data_client, corpus):
    seen = []
    url = "/api/v1/feedback?page_size=4"
    pages = 0
    while url:
        body = data_client.get(url).json()
        assert set(body) == {"next", "previous", "results"}
        seen += [item["id"] for item in body["results"]]
        url = body["next"]
        pages += 1

    assert pages == 2
    assert seen == sorted(corpus, reverse=True)


def test_query_count_does_not_grow_with_rows(data_client, project, django_assert_num_queries):
    context = project_context(project=project)
    predictions_log(context=context, items=[{"external_id": "p"}])
    data_client.get("/api/v1/feedback")  # warm the key cache

    def add(n):
        feedback_submit(
            context=context,
            items=[{"prediction": "p", "kind": "report", "categories": ["unsafe", "biased"]}] * n,
        )

    add(2)
    with django_assert_num_queries(1):  # feedback page (+prediction join; categories: a column)
        assert len(data_client.get("/api/v1/feedback").json()["results"]) == 2
    add(40)
    with django_assert_num_queries(1):
        assert len(data_client.get("/api/v1/feedback").json()["results"]) == 42
