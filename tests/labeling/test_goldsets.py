"""Gold sets through their services and models: the published checksum against an independent
sha256, immutability at the service, model and (PostgreSQL) database layers, the purge escape,
draft copying, diffs on constructed versions, and promotion from review with its lineage and
agreement threshold."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from feedback.errors import Conflict, InvalidInput, NotFound
from feedback.models import Prediction
from feedback.selectors import active_categories
from labeling.models import Export, GoldItem, GoldSet, GoldSetVersion, Label, Queue, QueueItem
from labeling.models.gold import PublishedGoldError
from labeling.payloads.gold import gold_item_input, gold_set_input
from labeling.payloads.labels import label_input
from labeling.selectors.gold import gold_version_checksum, goldset_versions_diff
from labeling.services.claims import queue_claim_next
from labeling.services.goldsets import (
    gold_item_add,
    gold_item_promote,
    gold_item_remove,
    gold_item_update,
    goldset_create,
    goldset_purge,
    goldset_version_create_draft,
    goldset_version_discard,
    goldset_version_publish,
)
from labeling.services.labels import item_adjudicate, item_label_submit

pytestmark = pytest.mark.django_db


# --- helpers ---------------------------------------------------------------------------------


def item_payload(key: str, verdict: str = "incorrect", **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "input": {"message": f"question {key}"},
        "output": {"reply": f"answer {key}"},
        "expected": {"verdict": verdict, "label": None, "categories": ["incorrect"]},
        "segment": {"locale": "de-DE"},
        **extra,
    }


def published(project, slug: str = "eval", keys: tuple[str, ...] = ("a", "b")) -> GoldSetVersion:
    """A gold set whose v1 holds ``keys`` and is published."""
    gold_set = goldset_create(project=project, slug=slug, name="Eval")
    draft = gold_set.versions.get()
    for key in keys:
        gold_item_add(version=draft, item=gold_item_input(item_payload(key)))
    return goldset_version_publish(version=draft)


def independent_sha256(items: list[dict[str, Any]]) -> str:
    """The checksum as a client would recompute it from the documented canonical form."""
    ordered = sorted(items, key=lambda item: item["key"])
    encoded = json.dumps(ordered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def review(queue: Queue, make_items, reviewers, answers: list[dict[str, Any] | str], prefix="g"):
    """A new item of ``queue`` labeled by ``reviewers`` in turn with ``answers``."""
    (item,) = make_items(queue, 1, prefix=prefix)
    categories = set(active_categories(project_id=queue.project_id))
    for reviewer, answer in zip(reviewers, answers, strict=True):
        data = {"verdict": answer} if isinstance(answer, str) else answer
        lease = queue_claim_next(queue=queue, reviewer=reviewer)
        assert lease is not None and lease.item_id == item.pk
        item_label_submit(
            item_id=item.pk, reviewer=reviewer, answer=label_input(data), categories=categories
        )
    item.refresh_from_db()
    return item


@pytest.fixture
def trio(project, make_reviewer):
    """A queue of overlap 3 with three reviewers."""
    queue = Queue.objects.create(project=project, name="trio", overlap=3)
    reviewers = [make_reviewer(name, queue) for name in ("ann", "ben", "cat")]
    return queue, reviewers


@pytest.fixture
def draft(project) -> GoldSetVersion:
    return goldset_create(project=project, slug="eval", name="Eval").versions.get()


# --- creating, publishing, the checksum ------------------------------------------------------


def test_create_opens_an_empty_draft_v1_and_refuses_a_taken_slug(project, member):
    gold_set = goldset_create(project=project, slug="eval", name="", actor=member)

    (version,) = gold_set.versions.all()
    assert (gold_set.name, gold_set.created_by) == ("eval", member)
    assert (version.number, version.status, version.item_count, version.parent) == (
        1,
        "draft",
        0,
        None,
    )
    with pytest.raises(Conflict) as taken:
        goldset_create(project=project, slug="eval")
    assert taken.value.errors[0].code == "exists"
    with pytest.raises(InvalidInput) as bad:  # the one declaration of API, admin and demo
        goldset_create(project=project, slug=gold_set_input({"slug": "no spaces"}).slug)
    assert bad.value.errors[0].field == "slug"
    assert GoldSet.objects.count() == 1


def test_publish_records_sha256_of_the_canonical_content(draft, member):
    payloads = [
        item_payload("zeta", "correct", input={"z": [3, 2, 1], "a": {"é": "ü"}}),
        {
            "key": "Ärger",  # non-ASCII: compared by code point, encoded as UTF-8
            "input": "plain text",
            "output": None,
            "expected": {"verdict": None, "label": "refund", "categories": ["unsafe", "biased"]},
        },
        item_payload("alpha", "unsure", segment={"locale": "en-US", "age_band": "65+"}),
    ]
    for payload in payloads:
        gold_item_add(version=draft, item=gold_item_input(payload))
    before = timezone.now()

    version = goldset_version_publish(version=draft, actor=member)

    expected_content = [
        {
            "key": "zeta",
            "input": {"z": [3, 2, 1], "a": {"é": "ü"}},
            "output": {"reply": "answer zeta"},
            "expected": {"verdict": "correct", "label": None, "categories": ["incorrect"]},
            "segment": {"locale": "de-DE"},
        },
        {
            "key": "Ärger",
            "input": "plain text",
            "output": None,
            # categories are stored sorted, so their order never changes the checksum
            "expected": {"verdict": None, "label": "refund", "categories": ["biased", "unsafe"]},
            "segment": {},
        },
        {
            "key": "alpha",
            "input": {"message": "question alpha"},
            "output": {"reply": "answer alpha"},
            "expected": {"verdict": "unsure", "label": None, "categories": ["incorrect"]},
            "segment": {"locale": "en-US", "age_band": "65+"},
        },
    ]
    version.refresh_from_db()
    assert version.checksum == independent_sha256(expected_content)
    assert version.checksum == gold_version_checksum(version=version)
    assert (version.status, version.item_count, version.published_by) == ("published", 3, member)
    assert version.published_at >= before


def test_checksum_covers_content_only_not_lineage_or_insertion_order(project):
    first = published(project, "one", keys=("a", "b", "c"))
    second_set = goldset_create(project=project, slug="two")
    draft = second_set.versions.get()
    for key in ("c", "a", "b"):
        gold_item_add(version=draft, item=gold_item_input(item_payload(key)))
    GoldItem.objects.filter(version=draft).update(source_external_id="elsewhere")

    second = goldset_version_publish(version=draft)

    assert second.checksum == first.checksum
    assert len(first.checksum) == 64


def test_publishing_refuses_an_empty_or_published_version(draft):
    with pytest.raises(Conflict) as empty:
        goldset_version_publish(version=draft)
    gold_item_add(version=draft, item=gold_item_input(item_payload("a")))
    version = goldset_version_publish(version=draft)
    checksum = version.checksum

    with pytest.raises(Conflict) as again:
        goldset_version_publish(version=version)

    assert (empty.value.errors[0].code, again.value.errors[0].code) == ("empty", "published")
    version.refresh_from_db()
    assert version.checksum == checksum


# --- immutability: services ------------------------------------------------------------------


def test_services_refuse_every_change_to_a_published_version(project, trio, make_items):
    version = published(project)
    queue, reviewers = trio
    item = review(queue, make_items, reviewers, ["incorrect"] * 3)
    attempts = {
        "add": lambda: gold_item_add(version=version, item=gold_item_input(item_payload("c"))),
        "update": lambda: gold_item_update(
            version=version,
            key="a",
            item=gold_item_input({"expected": {"verdict": "correct"}}, partial=True),
        ),
        "remove": lambda: gold_item_remove(version=version, keys=["a"]),
        "promote": lambda: gold_item_promote(version=version, item_id=item.pk),
        "discard": lambda: goldset_version_discard(version=version),
    }

    codes = {}
    for name, attempt in attempts.items():
        with pytest.raises(PublishedGoldError) as refused:
            attempt()
        codes[name] = (refused.value.status_code, refused.value.errors[0].code)

    assert set(codes.values()) == {(409, "published")}
    assert sorted(version.items.values_list("key", "expected_verdict")) == [
        ("a", "incorrect"),
        ("b", "incorrect"),
    ]
    assert gold_version_checksum(version=version) == version.checksum


# --- immutability: the model layer -----------------------------------------------------------


def test_model_layer_refuses_writes_to_published_items(project):
    version = published(project)
    item = version.items.get(key="a")
    draft = goldset_version_create_draft(gold_set=version.gold_set)
    items = GoldItem.objects.filter(version=version)

    item.expected_verdict = "correct"
    attempts = {
        "save": item.save,
        "delete": item.delete,
        "queryset update": lambda: items.update(expected_label="x"),
        "queryset delete": items.delete,
        "bulk_create": lambda: GoldItem.objects.bulk_create([GoldItem(version=version, key="c")]),
        "create": lambda: GoldItem.objects.create(version=version, key="d"),
        "move into": lambda: GoldItem.objects.filter(version=draft).update(version=version),
        "move out": lambda: setattr(item, "version", draft) or item.save(),
    }
    messages = {}
    for name, attempt in attempts.items():
        with pytest.raises(PublishedGoldError) as refused:
            attempt()
        messages[name] = str(refused.value)

    assert all("published and frozen for good" in message for message in messages.values())
    assert GoldItem.objects.filter(version=version).count() == 2
    assert set(
        GoldItem.objects.filter(version=version).values_list("expected_verdict", flat=True)
    ) == {"incorrect"}
    assert GoldItem.objects.filter(version=draft).count() == 2


def test_model_layer_leaves_drafts_editable(draft):
    gold_item_add(version=draft, item=gold_item_input(item_payload("a")))

    updated = GoldItem.objects.filter(version=draft).update(expected_label="refund")
    deleted, _ = GoldItem.objects.filter(version=draft).delete()

    assert (updated, deleted) == (1, 1)


def test_model_layer_refuses_unpublishing_and_deleting_a_version(project, other_project):
    version = published(project)
    gold_set = version.gold_set

    version.status = GoldSetVersion.Status.DRAFT
    with pytest.raises(PublishedGoldError):
        version.save()
    with pytest.raises(PublishedGoldError):
        GoldSetVersion.objects.filter(pk=version.pk).update(checksum="0" * 64)
    # Django deletes inside atomic(savepoint=False): a refusal spoils the caller's transaction,
    # so each attempt gets its own savepoint, as any caller that goes on would need.
    with pytest.raises(PublishedGoldError), transaction.atomic():
        GoldSetVersion.objects.filter(pk=version.pk).delete()
    with pytest.raises(PublishedGoldError), transaction.atomic():
        gold_set.delete()  # the cascade reaches the published version
    with pytest.raises(PublishedGoldError), transaction.atomic():
        project.delete()

    version.refresh_from_db()
    assert version.status == "published"
    # Notes may still change: they describe the version, they are not its content.
    GoldSetVersion.objects.filter(pk=version.pk).update(notes="used for the Q4 eval")
    assert GoldSetVersion.objects.get(pk=version.pk).notes == "used for the Q4 eval"
    assert GoldItem.objects.filter(version__gold_set=gold_set).count() == 2


# --- immutability: the database (PostgreSQL) -------------------------------------------------


def raw(sql: str, params: list | None = None) -> int:
    with transaction.atomic(), connection.cursor() as cursor:  # a savepoint per statement
        cursor.execute(sql, params)
        return cursor.rowcount


@pytest.mark.postgres
def test_raw_sql_cannot_change_published_gold_on_postgres(project):
    version = published(project)
    draft = goldset_create(project=project, slug="other").versions.get()
    gold_item_add(version=draft, item=gold_item_input(item_payload("x")))
    item_id = version.items.get(key="a").pk

    refused = [
        ("UPDATE labeling_golditem SET expected_verdict = 'correct' WHERE id = %s", [item_id]),
        ("UPDATE labeling_golditem SET key = 'renamed' WHERE version_id = %s", [version.pk]),
        ("DELETE FROM labeling_golditem WHERE id = %s", [item_id]),
        (
            "INSERT INTO labeling_golditem (version_id, key, expected_verdict, expected_label, "
            "expected_categories, segment, source_external_id, source_model_version, "
            "source_label_ids, created_at) VALUES (%s, 'new', 'correct', '', '[]', '{}', '', '', "
            "'[]', now())",
            [version.pk],
        ),
        (
            "UPDATE labeling_golditem SET version_id = %s WHERE version_id = %s",
            [version.pk, draft.pk],
        ),
        ("UPDATE labeling_goldsetversion SET status = 'draft' WHERE id = %s", [version.pk]),
        (
            "UPDATE labeling_goldsetversion SET checksum = repeat('0', 64) WHERE id = %s",
            [version.pk],
        ),
        ("UPDATE labeling_goldsetversion SET item_count = 7 WHERE id = %s", [version.pk]),
        ("DELETE FROM labeling_goldsetversion WHERE id = %s", [version.pk]),
    ]
    errors = []
    for sql, params in refused:
        with pytest.raises(IntegrityError) as error:
            raw(sql, params)
        errors.append(str(error.value))

    assert all("published" in error for error in errors), errors
    assert (
        raw("UPDATE labeling_golditem SET expected_label = 'ok' WHERE version_id = %s", [draft.pk])
        == 1
    )
    assert raw("UPDATE labeling_goldsetversion SET notes = 'n' WHERE id = %s", [version.pk]) == 1
    version.refresh_from_db()
    assert (version.status, version.item_count) == ("published", 2)
    assert gold_version_checksum(version=version) == version.checksum


@pytest.mark.postgres
def test_postgres_purge_setting_alone_opens_nothing(project):
    # The setting was once enough to delete single items; now a purge record is needed too
    # (tests/labeling/test_gold_purge.py covers the rest).
    version = published(project)
    with transaction.atomic():
        raw("SET LOCAL redress.gold_purge = 'on'")
        with pytest.raises(IntegrityError, match="published gold is immutable"):
            raw("DELETE FROM labeling_golditem WHERE version_id = %s", [version.pk])

    assert version.items.count() == 2


def test_purge_removes_a_gold_set_with_published_versions(project):
    v1 = published(project, keys=("a", "b"))
    gold_set = v1.gold_set
    draft = goldset_version_create_draft(gold_set=gold_set)
    gold_item_add(version=draft, item=gold_item_input(item_payload("c")))
    goldset_version_publish(version=draft)  # v2, whose parent (v1) is PROTECTed
    goldset_version_create_draft(gold_set=gold_set)  # v3, a draft
    kept = published(project, slug="kept")
    export = Export.objects.create(project=project, format="jsonl", gold_version=v1)
    with pytest.raises(Conflict) as in_use:  # an export keeps its gold version
        goldset_purge(gold_set=gold_set)
    assert in_use.value.errors[0].code == "in_use"
    export.delete()

    counts = goldset_purge(gold_set=gold_set)

    assert counts == {"versions": 3, "items": 2 + 3 + 3, "record": counts["record"]}
    assert not GoldSet.objects.filter(pk=gold_set.pk).exists()
    assert GoldItem.objects.count() == kept.items.count() == 2
    # The escape is closed again: the kept set is as frozen as before.
    with pytest.raises(PublishedGoldError):
        kept.items.all().delete()
    if connection.vendor == "postgresql":
        with pytest.raises(IntegrityError):
            raw("DELETE FROM labeling_golditem WHERE version_id = %s", [kept.pk])


def test_deleting_the_publisher_keeps_the_version_published(project, make_reviewer):
    ds = make_reviewer("dora", role="data_scientist")
    gold_set = goldset_create(project=project, slug="eval")
    draft = gold_set.versions.get()
    gold_item_add(version=draft, item=gold_item_input(item_payload("a")))
    version = goldset_version_publish(version=draft, actor=ds)

    ds.delete()  # published_by is SET NULL: an UPDATE the trigger allows

    version.refresh_from_db()
    assert (version.published_by, version.status) == (None, "published")


# --- drafts ----------------------------------------------------------------------------------


def test_new_draft_copies_the_latest_published_version_with_lineage(project, trio, make_items):
    queue, reviewers = trio
    item = review(queue, make_items, reviewers, ["incorrect"] * 3)
    v1 = published(project, keys=("a",))
    gold_set = v1.gold_set

    with pytest.raises(Conflict) as exists:  # one draft at a time
        goldset_version_create_draft(gold_set=gold_set)
        goldset_version_create_draft(gold_set=gold_set)
    v2 = GoldSetVersion.objects.get(gold_set=gold_set, number=2)
    promoted = gold_item_promote(version=v2, item_id=item.pk)
    gold_item_remove(version=v2, keys=["a"])
    goldset_version_publish(version=v2)
    v3 = goldset_version_create_draft(gold_set=gold_set, notes="next round")

    assert exists.value.errors[0].code == "draft_exists"
    assert (v3.number, v3.parent_id, v3.status, v3.item_count) == (3, v2.pk, "draft", 1)
    (copy,) = v3.items.all()
    assert copy.pk != promoted.pk
    fields = [
        f.attname
        for f in GoldItem._meta.concrete_fields
        if f.attname not in ("id", "version_id", "created_at")
    ]
    assert {name: getattr(copy, name) for name in fields} == {
        name: getattr(promoted, name) for name in fields
    }
    assert gold_version_checksum(version=v3) == GoldSetVersion.objects.get(pk=v2.pk).checksum


def test_draft_edits_keep_the_item_count(draft):
    for key in ("a", "b", "c"):
        gold_item_add(version=draft, item=gold_item_input(item_payload(key)))
    gold_item_update(
        version=draft,
        key="b",
        item=gold_item_input({"key": "b2", "segment": {"locale": "fr"}}, partial=True),
    )

    with pytest.raises(Conflict):
        gold_item_add(version=draft, item=gold_item_input(item_payload("a")))
    with pytest.raises(NotFound) as missing:
        gold_item_remove(version=draft, keys=["a", "zz"])
    removed = gold_item_remove(version=draft, keys=["c", "a"])

    draft.refresh_from_db()
    assert removed == ["a", "c"]
    assert "'zz'" in missing.value.errors[0].detail
    assert draft.item_count == 1
    assert list(draft.items.values_list("key", "segment")) == [("b2", {"locale": "fr"})]


def test_discarding_a_draft(project):
    v1 = published(project, keys=("a", "b"))
    draft = goldset_version_create_draft(gold_set=v1.gold_set)

    dropped = goldset_version_discard(version=draft)

    assert dropped == 2
    assert list(v1.gold_set.versions.values_list("number", flat=True)) == [1]
    assert goldset_version_create_draft(gold_set=v1.gold_set).number == 2


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"key": "a"}, ["expected"]),
        ({"key": "", "expected": {"verdict": "correct"}}, ["key"]),
        ({"key": "a", "expected": {"verdict": "maybe"}}, ["expected.verdict"]),
        ({"key": "a", "expected": {"verdict": None, "label": ""}}, ["expected"]),
        (
            {"key": "a", "expected": {"verdict": "correct", "categories": ["incorrect", "rude"]}},
            ["expected.categories[1]"],
        ),
        ({"key": "a", "expected": {"verdict": "correct", "why": 1}}, ["expected.why"]),
        ({"key": "a", "expected": {"verdict": "correct"}, "extra": 1}, ["extra"]),
        ({"key": "a", "expected": {"verdict": "correct"}, "input": {"t": "a\x00"}}, ["input"]),
        (
            {"key": "a", "expected": {"verdict": "correct"}, "segment": {"bad key": "x"}},
            ["segment.bad key"],
        ),
        ({"key": 7, "expected": "correct"}, ["key", "expected"]),
    ],
)
def test_invalid_items_are_refused_naming_the_field(draft, payload, fields):
    with pytest.raises(InvalidInput) as refused:
        gold_item_add(version=draft, item=gold_item_input(payload))

    assert [error.field for error in refused.value.errors] == fields
    assert draft.items.count() == 0


# --- diffs -----------------------------------------------------------------------------------


def test_diff_of_constructed_versions(project):
    v1 = published(project, keys=("a", "b", "c", "d", "e"))
    v2 = goldset_version_create_draft(gold_set=v1.gold_set)
    gold_item_remove(version=v2, keys=["a"])
    gold_item_update(
        version=v2,
        key="b",
        item=gold_item_input({"expected": {"verdict": "correct"}}, partial=True),
    )
    gold_item_update(
        version=v2, key="c", item=gold_item_input({"input": {"message": "reworded"}}, partial=True)
    )
    gold_item_update(
        version=v2, key="e", item=gold_item_input({"segment": {"locale": "de-DE"}}, partial=True)
    )  # the same
    gold_item_add(version=v2, item=gold_item_input(item_payload("f")))
    gold_item_add(version=v2, item=gold_item_input(item_payload("0-first")))

    forward = goldset_versions_diff(version=v2, against=v1)
    backward = goldset_versions_diff(version=v1, against=v2)
    same = goldset_versions_diff(version=v1, against=v1)

    assert forward == {"added": ["0-first", "f"], "removed": ["a"], "changed": ["b", "c"]}
    assert backward == {"added": ["a"], "removed": ["0-first", "f"], "changed": ["b", "c"]}
    assert same == {"added": [], "removed": [], "changed": []}


def test_diff_sees_a_category_or_label_change_only(project):
    v1 = published(project, keys=("a", "b"))
    v2 = goldset_version_create_draft(gold_set=v1.gold_set)
    gold_item_update(
        version=v2,
        key="a",
        item=gold_item_input(
            {"expected": {"verdict": "incorrect", "categories": ["incorrect", "unsafe"]}},
            partial=True,
        ),
    )
    gold_item_update(
        version=v2,
        key="b",
        item=gold_item_input(
            {"expected": {"verdict": "incorrect", "label": "refund", "categories": ["incorrect"]}},
            partial=True,
        ),
    )

    assert goldset_versions_diff(version=v2, against=v1)["changed"] == ["a", "b"]


# --- promotion -------------------------------------------------------------------------------


def test_promotion_copies_the_prediction_and_consensus_with_lineage(
    project, draft, make_reviewer, make_items
):
    queue = Queue.objects.create(
        project=project, name="classes", overlap=3, label_choices=["refund", "shipping"]
    )
    reviewers = [make_reviewer(name, queue) for name in ("ann", "ben", "cat")]
    item = review(
        queue,
        make_items,
        reviewers,
        [
            {"verdict": "incorrect", "true_label": "shipping", "categories": ["incorrect"]},
            {"verdict": "incorrect", "true_label": "shipping", "categories": ["incomplete"]},
            {"verdict": "incorrect", "true_label": "shipping", "categories": []},
        ],
    )
    prediction = item.prediction
    Prediction.objects.filter(pk=prediction.pk).update(model_version="2026-11-01")
    prediction.refresh_from_db()
    label_ids = sorted(Label.objects.filter(item=item).values_list("pk", flat=True))

    gold = gold_item_promote(version=draft, item_id=item.pk)

    assert item.status == "complete"
    assert (gold.key, gold.input, gold.output, gold.segment) == (
        prediction.external_id,
        prediction.input,
        prediction.output,
        prediction.segment,
    )
    assert (gold.expected_verdict, gold.expected_label, gold.expected_categories) == (
        "incorrect",
        "shipping",
        ["incomplete", "incorrect"],
    )
    lineage = (
        gold.source_prediction_id,
        gold.source_external_id,
        gold.source_model_version,
        gold.source_item_id,
        gold.source_label_ids,
        gold.source_agreement,
    )
    assert lineage == (prediction.pk, prediction.external_id, "2026-11-01", item.pk, label_ids, 1.0)
    draft.refresh_from_db()
    assert draft.item_count == 1
    # Lineage is by value: the source may go, the gold item stays as it was.
    prediction.delete()
    gold.refresh_from_db()
    assert (gold.source_item_id, gold.source_external_id) == (item.pk, lineage[1])
    assert not QueueItem.objects.filter(pk=item.pk).exists()


def test_promotion_threshold_from_settings_and_per_request(settings, draft, trio, make_items):
    queue, reviewers = trio
    two_of_three = review(queue, make_items, reviewers, ["correct", "correct", "incorrect"], "p")
    assert two_of_three.consensus["verdict"] == "correct"

    settings.REDRESS_GOLD_MIN_AGREEMENT = 0.75
    with pytest.raises(Conflict) as low:
        gold_item_promote(version=draft, item_id=two_of_three.pk)
    lowered = gold_item_promote(version=draft, item_id=two_of_three.pk, min_agreement=0.6)
    del settings.REDRESS_GOLD_MIN_AGREEMENT  # the default, 0.66, takes two of three
    unanimous = review(queue, make_items, reviewers, ["incorrect"] * 3, "q")
    split_with_unsure = review(queue, make_items, reviewers, ["correct", "unsure", "unsure"], "r")
    by_default = gold_item_promote(version=draft, item_id=unanimous.pk)
    with pytest.raises(Conflict) as unsure:
        gold_item_promote(version=draft, item_id=split_with_unsure.pk)
    with pytest.raises(InvalidInput):
        gold_item_promote(version=draft, item_id=unanimous.pk, min_agreement=1.5)

    assert low.value.errors[0].code == "low_agreement"
    assert "67%" in low.value.errors[0].detail and "75%" in low.value.errors[0].detail
    assert round(lowered.source_agreement, 4) == 0.6667
    assert by_default.source_agreement == 1.0
    assert unsure.value.errors[0].code == "low_agreement"
    assert sorted(draft.items.values_list("source_item_id", flat=True)) == sorted(
        [two_of_three.pk, unanimous.pk]
    )


def test_promotion_refuses_what_is_not_a_clear_consensus(
    project, other_project, draft, queue, make_reviewer, make_items
):
    alice, bob = make_reviewer("alice", queue), make_reviewer("bob", queue)
    tied = review(queue, make_items, [alice, bob], ["correct", "incorrect"], "t")
    adjudicated = review(queue, make_items, [alice, bob], ["correct", "incorrect"], "u")
    boss = make_reviewer("boss", role="admin")
    item_adjudicate(item=adjudicated, actor=boss, verdict="incorrect")
    done = review(queue, make_items, [alice, bob], ["correct", "correct"], "d")
    done_again = review(queue, make_items, [alice, bob], ["correct", "correct"], "e")
    (still_open,) = make_items(queue, 1, prefix="o")  # last: claims take the oldest first
    other_queue = Queue.objects.create(project=other_project, name="elsewhere", overlap=1)
    foreign = QueueItem.objects.create(
        queue=other_queue,
        inclusion_probability=1,
        prediction=Prediction.objects.create(
            project=other_project, external_id="x", occurred_at=timezone.now(), content_hash="x"
        ),
        status="complete",
        consensus={"verdict": "correct", "agreement": 1.0, "tie": False},
    )
    gold_source = published(project, slug="checks", keys=("g",)).items.get()
    gold_check = QueueItem.objects.create(
        queue=queue, gold_item=gold_source, inclusion_probability=1, status="complete"
    )

    codes = {}
    for name, item in {
        "tied": tied,
        "adjudicated": adjudicated,
        "open": still_open,
        "gold check": gold_check,
    }.items():
        with pytest.raises(Conflict) as refused:
            gold_item_promote(version=draft, item_id=item.pk)
        codes[name] = refused.value.errors[0].code
    with pytest.raises(NotFound) as not_ours:
        gold_item_promote(version=draft, item_id=foreign.pk)
    gold_item_promote(version=draft, item_id=done.pk)
    with pytest.raises(Conflict) as twice:
        gold_item_promote(version=draft, item_id=done.pk, key="another-key")
    with pytest.raises(Conflict) as key_taken:
        gold_item_promote(version=draft, item_id=done_again.pk, key=done.prediction.external_id)

    assert codes == {
        "tied": "not_complete",  # a tie waits for adjudication
        "adjudicated": "adjudicated",
        "open": "not_complete",
        "gold check": "gold_check",
    }
    assert not_ours.value.errors[0].field == "from_item"
    assert (twice.value.errors[0].code, key_taken.value.errors[0].code) == (
        "already_promoted",
        "exists",
    )
    assert list(draft.items.values_list("source_item_id", flat=True)) == [done.pk]
