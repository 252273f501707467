"""Gold sets over REST: the whole flow with a data key and a person, promotion, 409s on published
versions, scopes and project isolation, query counts, and refusals of bad input (never a 500)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feedback.models import Membership
from feedback.services.projects import membership_grant
from labeling.models import GoldItem, GoldSetVersion, Queue
from labeling.payloads.gold import gold_item_input
from labeling.selectors.gold import gold_version_checksum
from labeling.services.goldsets import gold_item_add, goldset_create, goldset_version_publish
from tests.conftest import client_for, token_for

from .test_goldsets import independent_sha256, item_payload, review

pytestmark = pytest.mark.django_db

API = "/api/v1/goldsets"


def send(client, method: str, path: str, body: Any = None, **query: Any):
    if query:
        from urllib.parse import urlencode

        path = f"{path}?{urlencode(query, doseq=True)}"
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, data=json.dumps(body), content_type="application/json")


def person(project, name: str, role: str = Membership.Role.DATA_SCIENTIST):
    user = membership_grant(project=project, username=name, role=role).user
    return client_for(token=token_for(user)), user


def codes(response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]


# --- the flow --------------------------------------------------------------------------------


def test_create_add_publish_draft_and_diff_with_a_data_key(data_client, project):
    created = send(data_client, "post", API, {"slug": "eval", "name": "Eval set"})
    items = f"{API}/eval/versions/1/items"
    added = [send(data_client, "post", items, item_payload(key)) for key in ("b", "a", "c")]
    listed = send(data_client, "get", items)
    published = send(data_client, "post", f"{API}/eval/versions/1/publish", {"notes": "first"})
    draft = send(data_client, "post", f"{API}/eval/versions")
    changed = send(
        data_client,
        "patch",
        f"{API}/eval/versions/2/items",
        {"expected": {"verdict": "correct"}},
        key="b",
    )
    removed = send(data_client, "delete", f"{API}/eval/versions/2/items", key="c")
    new = send(data_client, "post", f"{API}/eval/versions/2/items", item_payload("d"))
    diff = send(data_client, "get", f"{API}/eval/versions/2/diff", against=1)
    versions = send(data_client, "get", f"{API}/eval/versions")
    sets = send(data_client, "get", API)

    assert created.status_code == 201, created.content
    assert created.json() | {"created_at": None} == {
        "slug": "eval",
        "name": "Eval set",
        "description": "",
        "project": project.slug,
        "latest_published": None,
        "draft": 1,
        "created_by": None,  # an API key is not a person
        "created_at": None,
    }
    assert [r.status_code for r in added] == [201, 201, 201]
    assert added[0].json() | {"created_at": None} == {
        "key": "b",
        "input": {"message": "question b"},
        "output": {"reply": "answer b"},
        "expected": {"verdict": "incorrect", "label": None, "categories": ["incorrect"]},
        "segment": {"locale": "de-DE"},
        "lineage": {
            "prediction_id": None,
            "external_id": "",
            "model_version": "",
            "item_id": None,
            "label_ids": [],
            "agreement": None,
        },
        "created_at": None,
    }
    assert [item["key"] for item in listed.json()] == ["a", "b", "c"]
    assert published.status_code == 200, published.content
    body = published.json()
    contents = [
        {k: v for k, v in item.items() if k not in ("lineage", "created_at")}
        for item in listed.json()
    ]
    assert body["checksum"] == independent_sha256(contents)
    assert (body["status"], body["item_count"], body["notes"], body["parent"]) == (
        "published",
        3,
        "first",
        None,
    )
    assert draft.status_code == 201
    assert (draft.json()["number"], draft.json()["parent"], draft.json()["item_count"]) == (2, 1, 3)
    assert changed.status_code == 200 and changed.json()["expected"]["verdict"] == "correct"
    assert removed.json() == {"removed": ["c"], "item_count": 2}
    assert new.status_code == 201
    assert diff.json() == {
        "version": 2,
        "against": 1,
        "added": ["d"],
        "removed": ["c"],
        "changed": ["b"],
    }
    assert [(v["number"], v["status"], v["item_count"]) for v in versions.json()] == [
        (1, "published", 3),
        (2, "draft", 3),
    ]
    assert [(s["slug"], s["latest_published"], s["draft"]) for s in sets.json()] == [("eval", 1, 2)]


def test_a_published_version_answers_409_and_stays_as_it_was(data_client, project):
    gold_set = goldset_create(project=project, slug="eval")
    gold_item_add(version=gold_set.versions.get(), item=gold_item_input(item_payload("a")))
    version = goldset_version_publish(version=gold_set.versions.get())
    items = f"{API}/eval/versions/1/items"

    responses = [
        send(data_client, "post", items, item_payload("b")),
        send(data_client, "patch", items, {"segment": {}}, key="a"),
        send(data_client, "delete", items, key="a"),
        send(data_client, "post", f"{API}/eval/versions/1/publish"),
        send(data_client, "post", f"{API}/eval/versions"),  # fine: a new draft
        send(data_client, "post", f"{API}/eval/versions"),  # a second draft: 409
    ]

    assert [r.status_code for r in responses] == [409, 409, 409, 409, 201, 409]
    assert codes(responses[0]) == ["published"]
    assert codes(responses[5]) == ["draft_exists"]
    assert gold_version_checksum(version=version) == version.checksum
    assert list(GoldItem.objects.filter(version=version).values_list("key", flat=True)) == ["a"]


def test_promotion_through_the_api(data_client, project, make_reviewer, make_items):
    queue = Queue.objects.create(project=project, name="trio", overlap=3)
    reviewers = [make_reviewer(name, queue) for name in ("ann", "ben", "cat")]
    item = review(queue, make_items, reviewers, ["correct", "correct", "incorrect"])
    goldset_create(project=project, slug="eval")
    items = f"{API}/eval/versions/1/items"

    strict = send(data_client, "post", items, {"from_item": item.pk, "min_agreement": 0.9})
    promoted = send(data_client, "post", items, {"from_item": item.pk, "key": "chosen"})
    again = send(data_client, "post", items, {"from_item": item.pk})
    unknown = send(data_client, "post", items, {"from_item": 10**12})
    mixed = send(data_client, "post", items, {"from_item": item.pk, "expected": {}})
    not_int = send(data_client, "post", items, {"from_item": "7"})

    assert strict.status_code == 409 and codes(strict) == ["low_agreement"]
    assert promoted.status_code == 201, promoted.content
    body = promoted.json()
    assert body["key"] == "chosen"
    assert body["expected"] == {"verdict": "correct", "label": None, "categories": []}
    assert body["lineage"]["item_id"] == item.pk
    assert body["lineage"]["external_id"] == item.prediction.external_id
    assert len(body["lineage"]["label_ids"]) == 3
    assert round(body["lineage"]["agreement"], 4) == 0.6667
    assert (again.status_code, codes(again)) == (409, ["already_promoted"])
    assert unknown.status_code == 404
    assert (mixed.status_code, codes(mixed)) == (400, ["unknown_field"])
    assert not_int.status_code == 400


# --- who may call ----------------------------------------------------------------------------


def test_scopes_and_roles(project, ingest_client):
    goldset_create(project=project, slug="eval")
    reviewer_client, _ = person(project, "rita", Membership.Role.REVIEWER)
    admin_client, _ = person(project, "adam", Membership.Role.ADMIN)
    ds_client, ds = person(project, "dana")
    paths = [
        ("get", API),
        ("post", API),
        ("get", f"{API}/eval/versions"),
        ("post", f"{API}/eval/versions"),
        ("get", f"{API}/eval/versions/1/items"),
        ("post", f"{API}/eval/versions/1/items"),
        ("delete", f"{API}/eval/versions/1/items"),
        ("patch", f"{API}/eval/versions/1/items"),
        ("post", f"{API}/eval/versions/1/publish"),
        ("get", f"{API}/eval/versions/1/diff"),
    ]

    anonymous = [send(client_for(), m, p).status_code for m, p in paths]
    ingest = [send(ingest_client, m, p).status_code for m, p in paths]
    reviewer = [send(reviewer_client, m, p).status_code for m, p in paths]

    assert set(anonymous) == {401}
    assert set(ingest) == {403}
    assert set(reviewer) == {403}
    assert send(admin_client, "get", f"{API}/eval/versions").status_code == 200
    created = send(ds_client, "post", API, {"slug": "mine", "name": "Mine"})
    assert created.status_code == 201 and created.json()["created_by"] == ds.username
    gold_item_add(
        version=GoldSetVersion.objects.get(gold_set__slug="mine"),
        item=gold_item_input(item_payload("a")),
    )
    publish = send(ds_client, "post", f"{API}/mine/versions/1/publish")
    assert publish.json()["published_by"] == ds.username


def test_another_projects_gold_is_404(project, other_project, make_key):
    goldset_create(project=other_project, slug="theirs")
    goldset_create(project=project, slug="ours")
    data_client = client_for(make_key(project, ["data"]))
    stranger, _ = person(other_project, "olga", Membership.Role.REVIEWER)
    membership_grant(project=project, username="olga", role=Membership.Role.DATA_SCIENTIST)

    for client in (data_client, stranger):
        assert send(client, "get", f"{API}/theirs/versions").status_code == 404
        assert (
            send(client, "post", f"{API}/theirs/versions/1/items", item_payload("a")).status_code
            == 404
        )
        assert send(client, "post", f"{API}/theirs/versions/1/publish").status_code == 404
        assert [s["slug"] for s in send(client, "get", API).json()] == ["ours"]
    assert send(data_client, "get", API, project=other_project.slug).json() == []
    created = send(data_client, "post", API, {"slug": "x", "project": other_project.slug})
    assert created.status_code == 404
    assert (
        send(stranger, "post", API, {"slug": "x", "project": other_project.slug}).status_code == 404
    )
    assert GoldItem.objects.count() == 0


def test_a_person_in_several_projects_names_the_project(project, other_project):
    client, _ = person(project, "pia")
    membership_grant(project=other_project, username="pia", role=Membership.Role.ADMIN)
    goldset_create(project=project, slug="eval")
    goldset_create(project=other_project, slug="eval")

    unnamed = send(client, "post", API, {"slug": "new"})
    named = send(client, "post", API, {"slug": "new", "project": other_project.slug})
    ambiguous = send(client, "get", f"{API}/eval/versions")
    chosen = send(client, "get", f"{API}/eval/versions", project=other_project.slug)
    listed = send(client, "get", API)
    filtered = send(client, "get", API, project=project.slug)

    assert (unnamed.status_code, codes(unnamed)) == (400, ["required"])
    assert named.status_code == 201 and named.json()["project"] == other_project.slug
    assert (ambiguous.status_code, codes(ambiguous)) == (400, ["ambiguous"])
    assert chosen.status_code == 200
    assert [(s["project"], s["slug"]) for s in listed.json()] == sorted(
        [(project.slug, "eval"), (other_project.slug, "eval"), (other_project.slug, "new")]
    )
    assert [s["project"] for s in filtered.json()] == [project.slug]


# --- query counts ----------------------------------------------------------------------------


def test_list_endpoints_have_pinned_query_counts(data_client, project, django_assert_num_queries):
    for n in range(3):
        gold_set = goldset_create(project=project, slug=f"set-{n}")
        draft = gold_set.versions.get()
        for key in ("a", "b", "c", "d"):
            gold_item_add(version=draft, item=gold_item_input(item_payload(key)))
        goldset_version_publish(version=draft)
    send(data_client, "get", API)  # warms the key lookup cache

    # the gold sets with their annotations
    with django_assert_num_queries(1):
        many = send(data_client, "get", API)
    # the gold set, then its versions with parent and publisher
    with django_assert_num_queries(2):
        versions = send(data_client, "get", f"{API}/set-0/versions")
    # the gold set, the version, its items
    with django_assert_num_queries(3):
        items = send(data_client, "get", f"{API}/set-0/versions/1/items")

    assert (len(many.json()), len(versions.json()), len(items.json())) == (3, 1, 4)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "status", "field"),
    [
        ("get", API, None, {"sort": "slug"}, 400, "sort"),
        ("post", API, ["not", "an", "object"], {}, 400, None),
        ("post", API, {"slug": "bad slug"}, {}, 400, "slug"),
        ("post", API, {"slug": "ok", "colour": "red"}, {}, 400, "colour"),
        ("post", API, {"slug": "ok", "name": "a\x00b"}, {}, 400, "name"),
        ("post", f"{API}/eval/versions/1/items", "text", {}, 400, None),
        ("post", f"{API}/eval/versions/1/items", {"key": "a"}, {}, 400, "expected"),
        ("post", f"{API}/eval/versions/1/items", {"from_item": True}, {}, 400, "from_item"),
        (
            "post",
            f"{API}/eval/versions/1/items",
            {"from_item": 1, "min_agreement": 2},
            {},
            400,
            "min_agreement",
        ),
        ("post", f"{API}/eval/versions/99/items", {"key": "a"}, {}, 404, "number"),
        ("get", f"{API}/eval/versions/99999999999999999999/items", None, {}, 404, "number"),
        ("get", f"{API}/nope/versions", None, {}, 404, "slug"),
        ("delete", f"{API}/eval/versions/1/items", None, {}, 400, "key"),
        ("delete", f"{API}/eval/versions/1/items", None, {"key": "missing"}, 404, "key"),
        ("patch", f"{API}/eval/versions/1/items", {"segment": {}}, {}, 400, "key"),
        ("patch", f"{API}/eval/versions/1/items", {"segment": {}}, {"key": "zz"}, 404, "key"),
        ("get", f"{API}/eval/versions/1/diff", None, {}, 400, "against"),
        ("get", f"{API}/eval/versions/1/diff", None, {"against": "-1"}, 400, "against"),
        ("get", f"{API}/eval/versions/1/diff", None, {"against": "7"}, 404, "against"),
        ("delete", f"{API}/eval/versions/1/items", None, {"key": "a\x00"}, 400, "key"),
        ("get", API, None, {"project": "p\x00"}, 400, "project"),
        ("post", f"{API}/eval/versions", {"notes": 5}, {}, 400, "notes"),
        ("post", f"{API}/eval/versions", {"notes": "n\x00"}, {}, 400, "notes"),
        ("post", f"{API}/eval/versions/1/publish", {"note": "typo"}, {}, 400, "note"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    data_client, project, method, path, body, query, status, field
):
    goldset_create(project=project, slug="eval")

    response = send(data_client, method, path, body, **query)

    assert response.status_code == status, response.content
    assert response.json()["errors"][0]["field"] == field
    assert GoldItem.objects.count() == 0
