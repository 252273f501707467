"""Hidden gold checks: served at the queue's rate, invisible to reviewers, scored, kept apart.

A queue with a gold set and ``gold_rate`` > 0 serves items of the set's latest published version
among its production items (labeling/services/claims.py). These tests pin the rate (a binomial
band for a fixed seed, and the exact draws), that a reviewer never gets one gold key twice, that
nothing a reviewer sees tells a check from a production item (API payloads and the workspace
HTML compared shape for shape), how answers are scored, and that gold answers never reach
labels_count, consensus (majority or Dawid-Skene), agreement, item counts, sampling or exports.
Gold rows are made directly (published with a checksum, as the model's constraint requires).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections import Counter
from html.parser import HTMLParser
from typing import Any

import pytest
from django.db import connection
from django.db.models import Max
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from scipy import stats as scipy_stats

from feedback.errors import Conflict, InvalidInput
from feedback.models import Feedback, Membership, Prediction
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit
from feedback.services.projects import membership_grant
from labeling.admin.workspace import reviewer_stats
from labeling.models import (
    Assignment,
    GoldItem,
    GoldSet,
    GoldSetVersion,
    Label,
    Queue,
    QueueItem,
    SamplingRun,
)
from labeling.payloads.labels import label_input
from labeling.payloads.queues import queue_input
from labeling.selectors import queue_stats
from labeling.services.claims import gold_draw, item_release, queue_claim_next
from labeling.services.labels import (
    gold_answer_correct,
    item_adjudicate,
    item_label_submit,
    label_update,
    queue_consensus_recompute,
)
from labeling.services.queues import queue_update
from labeling.services.sampling import policy_of, sampling_run_execute
from tests.feedback.test_admin import form_data

pytestmark = pytest.mark.django_db

CATEGORIES = {"incorrect", "incomplete", "unsafe", "biased", "off_topic", "too_slow", "other"}


# --- helpers ---------------------------------------------------------------------------------


def publish(version: GoldSetVersion) -> GoldSetVersion:
    version.status = GoldSetVersion.Status.PUBLISHED
    version.checksum = hashlib.sha256(f"v{version.pk}".encode()).hexdigest()
    version.published_at = timezone.now()
    version.item_count = version.items.count()
    version.save()
    return version


def make_gold(
    project,
    keys: list[str],
    *,
    gold_set: GoldSet | None = None,
    slug: str = "checks",
    verdict: str = "incorrect",
    label: str = "",
    published: bool = True,
    **fields: Any,
) -> GoldSetVersion:
    """A version of a gold set with these keys (a new set unless one is given), published."""
    if gold_set is None:
        gold_set = GoldSet.objects.create(project=project, slug=slug, name=slug.title())
    last = gold_set.versions.aggregate(n=Max("number"))["n"] or 0
    parent = gold_set.versions.filter(status="published").order_by("-number").first()
    version = GoldSetVersion.objects.create(gold_set=gold_set, number=last + 1, parent=parent)
    GoldItem.objects.bulk_create(
        GoldItem(
            version=version,
            key=key,
            input={"message": f"question {key}"},
            output={"reply": f"answer {key}"},
            expected_verdict=verdict,
            expected_label=label,
            expected_categories=["incorrect"] if verdict == "incorrect" else [],
            segment={"locale": "de-DE"},
            **{
                "source_external_id": f"chat-{key}",
                "source_model_version": "2026-11-01",
                **fields,
            },
        )
        for key in keys
    )
    return publish(version) if published else version


def gold_queue(queue: Queue, version: GoldSetVersion, *, rate: float, seed: int = 7) -> Queue:
    queue.gold_set, queue.gold_rate, queue.seed = version.gold_set, rate, seed
    queue.save()
    return queue


def seed_where(queue: Queue, reviewer, pattern: list[bool]) -> int:
    """A seed whose first draws for this reviewer are ``pattern`` (True: a gold check)."""
    for seed in range(10_000):
        queue.seed = seed
        if [gold_draw(queue=queue, reviewer_id=reviewer.pk, n=n) for n in range(len(pattern))] == (
            pattern
        ):
            queue.save()
            return seed
    raise AssertionError("no such seed")


def answer(queue: Queue, reviewer, *, verdict: str = "correct", **extra: Any) -> QueueItem | None:
    """Claim and label; returns the item answered (None when nothing was left)."""
    lease = queue_claim_next(queue=queue, reviewer=reviewer)
    if lease is None:
        return None
    data = {"verdict": verdict, **extra}
    if queue.label_choices and "true_label" not in data and verdict != "unsure":
        data["true_label"] = queue.label_choices[0]
    item_label_submit(
        item_id=lease.item_id, reviewer=reviewer, answer=label_input(data), categories=CATEGORIES
    )
    return QueueItem.objects.select_related("gold_item").get(pk=lease.item_id)


def served_key(item: QueueItem) -> str | None:
    return item.gold_item.key if item.gold_item_id is not None else None


def as_user(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def shape(value: Any) -> Any:
    """The keys and types of a JSON value, recursively (a list by the shapes it holds)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return sorted({json.dumps(shape(item), sort_keys=True) for item in value})
    return type(value).__name__


class TagShape(HTMLParser):
    """Every element of a page with its attribute names and its id and class values."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, tuple(sorted(found)), found.get("id"), found.get("class")))


def html_shape(html: str) -> list[tuple]:
    parser = TagShape()
    parser.feed(html)
    return parser.tags


def without_tokens(html: str) -> str:
    """The page without its random tokens (CSRF, the signed start time), which could spell
    anything."""
    return re.sub(r'(name="(?:csrfmiddlewaretoken|started)" value=")[^"]*"', r'\1"', html)


@pytest.fixture
def alice(make_reviewer, queue):
    return make_reviewer("alice", queue)


@pytest.fixture
def bob(make_reviewer, queue):
    return make_reviewer("bob", queue)


# --- the rate --------------------------------------------------------------------------------


def test_rate_is_binomial_for_a_fixed_seed_and_exactly_the_draws(
    project, queue, make_items, make_reviewer
):
    # given: 10 reviewers, 200 claims each at a rate of 0.1, with enough production and gold
    # items that neither runs out, so every claim is served as drawn. Each claim is released
    # (a skip): the cheapest way to move on, and a released item is not served again meanwhile.
    reviewers = [make_reviewer(f"r{i}", queue) for i in range(10)]
    queue.overlap = len(reviewers)
    gold_queue(queue, make_gold(project, [f"k{i}" for i in range(60)]), rate=0.1, seed=7)
    make_items(queue, 220)
    claims = 200

    # when
    gold = 0
    for reviewer in reviewers:
        for _ in range(claims):
            lease = queue_claim_next(queue=queue, reviewer=reviewer)
            gold += QueueItem.objects.filter(pk=lease.item_id, gold_item__isnull=False).exists()
            item_release(item=QueueItem(pk=lease.item_id), reviewer=reviewer)

    # then: within the 99.9% binomial band, and exactly what the draws say
    low, high = scipy_stats.binom.interval(0.999, claims * len(reviewers), 0.1)
    assert low <= gold <= high
    drawn = sum(
        gold_draw(queue=queue, reviewer_id=r.pk, n=n) for r in reviewers for n in range(claims)
    )
    assert gold == drawn
    assert Assignment.objects.filter(item__gold_item__isnull=False).count() == gold
    assert QueueItem.objects.filter(gold_item__isnull=False).count() <= 60


def test_the_same_seed_serves_the_same_sequence_and_another_seed_another(
    project, make_items, make_reviewer
):
    version = make_gold(project, [f"k{i}" for i in range(80)])
    queues = [
        gold_queue(Queue.objects.create(project=project, name=name), version, rate=0.3, seed=seed)
        for name, seed in (("a", 11), ("b", 11), ("c", 12))
    ]
    alice = make_reviewer("alice")
    for q in queues:
        q.reviewers.add(alice)
        make_items(q, 60, prefix=q.name)

    patterns = {
        q.name: [served_key(answer(q, alice)) is not None for _ in range(40)] for q in queues
    }

    assert patterns["a"] == patterns["b"]
    assert patterns["a"] != patterns["c"]
    assert patterns["a"] == [
        gold_draw(queue=queues[0], reviewer_id=alice.pk, n=n) for n in range(40)
    ]
    assert 0 < sum(patterns["a"]) < 40


def test_a_rate_of_zero_no_set_or_no_published_version_serves_no_check(
    project, queue, alice, make_items
):
    make_items(queue, 30)
    draft = make_gold(project, ["k1", "k2"], published=False)

    gold_queue(queue, draft, rate=0.5)  # a set with only a draft
    served = [answer(queue, alice) for _ in range(10)]
    queue.gold_rate = 0.0
    queue.gold_set = GoldSet.objects.get()
    publish(draft)
    queue.save()
    served += [answer(queue, alice) for _ in range(10)]

    assert all(item.gold_item_id is None for item in served)
    assert not QueueItem.objects.filter(gold_item__isnull=False).exists()


# --- never twice ------------------------------------------------------------------------------


def test_a_reviewer_never_gets_a_gold_key_twice_across_versions(
    project, queue, alice, bob, make_items
):
    v1 = make_gold(project, ["a", "b", "c"])
    gold_queue(queue, v1, rate=0.5)
    make_items(queue, 100)

    # the first check served is skipped: it counts as seen all the same
    first = None
    while first is None:
        lease = queue_claim_next(queue=queue, reviewer=alice)
        item = QueueItem.objects.select_related("gold_item").get(pk=lease.item_id)
        if item.gold_item_id is not None:
            first = item.gold_item.key
            item_release(item=item, reviewer=alice)
        else:
            item_label_submit(
                item_id=item.pk,
                reviewer=alice,
                answer=label_input({"verdict": "correct"}),
                categories=CATEGORIES,
            )
    served = [first] + [served_key(answer(queue, alice)) for _ in range(30)]
    v1_keys = [key for key in served if key is not None]

    # a new version with the same keys (new rows) and one more
    make_gold(project, ["a", "b", "c", "d"], gold_set=v1.gold_set)
    v2_keys = [key for key in (served_key(answer(queue, alice)) for _ in range(30)) if key]

    assert sorted(v1_keys) == ["a", "b", "c"]
    assert v2_keys == ["d"]
    # bob, new to the set, gets the latest version's four; each gold item's QueueItem is made
    # once and shared: v1's a, b, c (alice) and v2's a, b, c, d (alice's d, then bob's)
    bob_served = [answer(queue, bob) for _ in range(40)]
    bob_checks = [item for item in bob_served if item.gold_item_id is not None]
    assert sorted(item.gold_item.key for item in bob_checks) == ["a", "b", "c", "d"]
    assert {item.gold_item.version.number for item in bob_checks} == {2}
    assert Counter(
        QueueItem.objects.filter(gold_item__isnull=False).values_list("gold_item__key", flat=True)
    ) == {"a": 2, "b": 2, "c": 2, "d": 1}


def test_a_check_made_from_an_item_the_reviewer_labeled_is_not_served_to_them(
    project, queue, alice, bob, make_items
):
    # given: alice labeled a production item; two checks are promoted from its prediction
    items = make_items(queue, 6)
    queue.overlap = 1
    queue.save()
    assert answer(queue, alice).pk == items[0].pk
    version = make_gold(project, ["p-1", "p-2"], source_prediction_id=items[0].prediction_id)
    gold_queue(queue, version, rate=0.5)
    # a seed that draws a check on alice's next two claims and on bob's first two
    queue.seed = next(
        seed
        for seed in range(10_000)
        if all(
            gold_draw(
                queue=Queue(pk=queue.pk, gold_set=queue.gold_set, gold_rate=0.5, seed=seed),
                reviewer_id=reviewer.pk,
                n=n,
            )
            for reviewer, n in ((alice, 1), (alice, 2), (bob, 0), (bob, 1))
        )
    )
    queue.save()

    # when
    alice_keys = [served_key(answer(queue, alice)) for _ in range(2)]
    bob_keys = [served_key(answer(queue, bob)) for _ in range(2)]

    # then: alice never gets a check of the prediction she labeled; bob, who did not, gets both
    assert alice_keys == [None, None]
    assert sorted(bob_keys) == ["p-1", "p-2"]


def test_a_check_is_served_only_among_production_work(project, queue, alice, make_items):
    # given: the draw says gold on every one of alice's first 4 claims
    gold_queue(queue, make_gold(project, ["a", "b", "c", "d", "e"]), rate=0.5)
    seed_where(queue, alice, [False, True, True, True])
    make_items(queue, 1)

    # when: the single production item is answered, then alice claims again
    first = answer(queue, alice)

    # then: nothing left for alice, whatever the draw: no check after the work is done
    assert first.gold_item_id is None
    assert queue_claim_next(queue=queue, reviewer=alice) is None
    assert not QueueItem.objects.filter(gold_item__isnull=False).exists()


def test_when_no_unseen_check_is_left_a_production_item_is_served(
    project, queue, alice, make_items
):
    gold_queue(queue, make_gold(project, ["only"]), rate=0.5)
    seed_where(queue, alice, [True, True, True])
    make_items(queue, 5)

    served = [served_key(answer(queue, alice)) for _ in range(3)]

    assert served == ["only", None, None]


def test_holding_a_check_and_claiming_again_returns_it(project, queue, alice, make_items):
    gold_queue(queue, make_gold(project, ["a", "b"]), rate=0.5)
    seed_where(queue, alice, [True])
    make_items(queue, 3)

    first = queue_claim_next(queue=queue, reviewer=alice)
    again = queue_claim_next(queue=queue, reviewer=alice)

    assert again.pk == first.pk
    assert QueueItem.objects.get(pk=first.item_id).gold_item_id is not None
    assert Assignment.objects.filter(reviewer=alice).count() == 1


# --- invisible --------------------------------------------------------------------------------


@pytest.fixture
def look_alike(project, queue, alice, make_items):
    """alice's first claim is a production item, her second a gold check promoted from a
    prediction; both predictions have a report and a dispute (resolved, for the source)."""
    queue.show_segments = True
    queue.save()
    item = make_items(queue, 2)[0]  # a second one: a check is served only among production work
    Prediction.objects.filter(pk=item.prediction_id).update(model_version="2026-11-01")
    item.refresh_from_db()
    source = Prediction.objects.create(
        project=project,
        external_id="chat-7731",
        model="support-bot",
        model_version="2026-10-01",
        input={"message": "Can I change my address?"},
        output={"reply": "Yes, in your account settings."},
        label="account",
        confidence=0.91,
        segment={"locale": "fr-FR"},
        occurred_at=timezone.now(),
        content_hash="y",
    )
    for prediction in (item.prediction, source):
        feedback_submit(
            context=project_context(project=project),
            items=[
                {
                    "prediction": prediction.external_id,
                    "kind": "report",
                    "rating": -1,
                    "categories": ["incorrect"],
                    "comment": "Not what I asked.",
                    "correction": "Something else.",
                },
                {"prediction": prediction.external_id, "kind": "dispute", "comment": "Wrong."},
            ],
        )
    Feedback.objects.filter(prediction=source, kind="dispute").update(status="upheld")
    Feedback.objects.filter(prediction=item.prediction, kind="dispute").update(status="in_review")
    version = make_gold(
        project,
        ["addr-1"],
        source_prediction_id=source.pk,
        source_external_id=source.external_id,
    )
    gold_queue(queue, version, rate=0.5)
    seed_where(queue, alice, [False, True])
    return item, source


def test_a_check_claim_has_the_shape_of_a_production_claim(queue, alice, look_alike):
    item, _ = look_alike
    client = as_user(alice)

    production = client.post(f"/api/v1/queues/{queue.pk}/claim")
    production_label = client.post(
        f"/api/v1/items/{item.pk}/labels", {"verdict": "correct"}, format="json"
    )
    check = client.post(f"/api/v1/queues/{queue.pk}/claim")
    check_body = check.json()
    check_label = client.post(
        f"/api/v1/items/{check_body['item']}/labels", {"verdict": "correct"}, format="json"
    )

    assert production.status_code == check.status_code == 200
    assert production.json()["item"] == item.pk
    assert QueueItem.objects.get(pk=check_body["item"]).gold_item_id is not None
    assert shape(check_body) == shape(production.json())
    assert "gold" not in check.content.decode().lower()
    # shown as the prediction it was promoted from, its dispute still "under review"
    assert check_body["prediction"] == {
        "external_id": "chat-7731",
        "input": {"message": "question addr-1"},  # the gold item's frozen copy
        "output": {"reply": "answer addr-1"},
        "label": "account",
        "confidence": 0.91,
        "model_version": "2026-10-01",
        "segment": {"locale": "de-DE"},
    }
    assert [f["status"] for f in check_body["feedback"]] == [None, "in_review"]
    assert check_label.status_code == production_label.status_code == 201
    assert shape(check_label.json()) == shape(production_label.json())
    assert "gold" not in check_label.content.decode().lower()


def test_a_check_without_a_source_shows_its_lineage(project, queue, alice, make_items):
    make_items(queue, 2)
    gold_queue(queue, make_gold(project, ["chat-9001"], source_external_id=""), rate=0.5)
    seed_where(queue, alice, [True])

    body = as_user(alice).post(f"/api/v1/queues/{queue.pk}/claim").json()

    assert body["prediction"]["external_id"] == "chat-9001"
    assert body["prediction"]["model_version"] == "2026-11-01"
    assert (body["prediction"]["label"], body["prediction"]["confidence"]) == (None, None)
    assert body["feedback"] == []
    assert sorted(body) == [
        "categories",
        "feedback",
        "instructions",
        "item",
        "label_choices",
        "lease_expires_at",
        "prediction",
        "queue",
    ]


def test_the_workspace_page_of_a_check_is_the_page_of_any_item(queue, alice, look_alike):
    item, _ = look_alike
    client = Client()
    client.force_login(alice)
    page = reverse("admin:labeling_workspace", args=[queue.pk])
    submit = reverse("admin:labeling_workspace_submit", args=[queue.pk])

    production = client.get(page).content.decode()
    # the redirect after a submit claims the check and shows "Saved …": the page as reloaded
    # (the held lease again) is the one to compare with a first page
    client.post(submit, {"item": str(item.pk), "verdict": "correct"}, follow=True)
    check = client.get(page).content.decode()

    check_item = QueueItem.objects.get(gold_item__isnull=False)
    assert f'name="item" value="{check_item.pk}"' in check
    assert html_shape(check) == html_shape(production)
    assert "gold" not in without_tokens(check).lower()
    assert "chat-7731" in check
    saved = client.post(submit, {"item": str(check_item.pk), "verdict": "incorrect"}, follow=True)
    assert f"Saved item {check_item.pk}: incorrect." in saved.content.decode()


def test_reviewers_see_no_gold_figures_and_counts_that_move_as_usual(
    project, queue, alice, make_items
):
    make_items(queue, 4)
    gold_queue(queue, make_gold(project, ["a", "b"]), rate=0.5)
    seed_where(queue, alice, [False, True, False])
    served = [answer(queue, alice) for _ in range(3)]
    assert [item.gold_item_id is not None for item in served] == [False, True, False]
    client = Client()
    client.force_login(alice)

    index = client.get(reverse("admin:labeling_workspace_index"))

    # open counts hold production items only; the reviewer's own count holds every answer
    assert [(q.name, q.open_items, q.my_labels) for q in index.context["queues"]] == [
        ("review", 4, 3)
    ]
    assert reviewer_stats(user=alice)["labels"] == 3
    assert "gold" not in without_tokens(index.content.decode()).lower()
    # queue statistics are for the project's admins and data scientists, not reviewers
    assert as_user(alice).get(f"/api/v1/queues/{queue.pk}/stats").status_code == 403


# --- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choices", "expected", "given", "correct"),
    [
        ([], ("incorrect", ""), ("incorrect", ""), True),
        ([], ("incorrect", ""), ("correct", ""), False),
        ([], ("incorrect", ""), ("unsure", ""), False),  # not knowing is a miss
        ([], ("unsure", ""), ("unsure", ""), True),
        ([], ("correct", "deny"), ("correct", ""), True),  # no choices: the label is not asked
        (["approve", "deny"], ("incorrect", "deny"), ("incorrect", "deny"), True),
        (["approve", "deny"], ("incorrect", "deny"), ("incorrect", "approve"), False),
        (["approve", "deny"], ("incorrect", "deny"), ("correct", "deny"), False),
        (["approve", "deny"], ("", "deny"), ("correct", "deny"), True),  # label only
    ],
)
def test_answers_are_scored_against_the_expectation(
    project, queue, alice, make_items, choices, expected, given, correct
):
    queue.label_choices = choices
    queue.overlap = 1
    make_items(queue, 2)
    gold_queue(queue, make_gold(project, ["k"], verdict=expected[0], label=expected[1]), rate=0.5)
    seed_where(queue, alice, [True])
    extra = {"true_label": given[1]} if given[1] else {}

    item = answer(queue, alice, verdict=given[0], categories=[], **extra)

    assert item.gold_item_id is not None
    label = Label.objects.get(item=item)
    assert label.gold_correct is correct
    # never a production label: the item stays open, uncounted, without consensus
    assert (item.status, item.labels_count, item.consensus) == ("open", 0, None)


def test_categories_and_labels_the_queue_does_not_offer_are_not_scored():
    gold = GoldItem(expected_verdict="incorrect", expected_categories=["unsafe"])

    assert gold_answer_correct(gold=gold, verdict="incorrect", true_label="", label_choices=[])
    # the expected label is not among the queue's choices: only the verdict is checked
    assert gold_answer_correct(
        gold=GoldItem(expected_verdict="incorrect", expected_label="refund"),
        verdict="incorrect",
        true_label="deny",
        label_choices=["approve", "deny"],
    )
    # a label only, and one the queue does not offer: nothing to score
    assert (
        gold_answer_correct(
            gold=GoldItem(expected_label="refund"),
            verdict="correct",
            true_label="deny",
            label_choices=["approve", "deny"],
        )
        is None
    )


def test_an_edit_is_scored_again_and_still_counts_nowhere(project, queue, alice, make_items):
    make_items(queue, 2)
    gold_queue(queue, make_gold(project, ["k"], verdict="incorrect"), rate=0.5)
    seed_where(queue, alice, [True])
    item = answer(queue, alice, verdict="correct")
    label = Label.objects.get(item=item)
    assert label.gold_correct is False

    label_update(
        label=label,
        actor=alice,
        answer=label_input({"verdict": "incorrect"}),
        categories=CATEGORIES,
    )

    label.refresh_from_db()
    item.refresh_from_db()
    assert label.gold_correct is True
    assert label.revisions.get().content["verdict"] == "correct"
    assert (item.status, item.labels_count, item.consensus) == ("open", 0, None)


def test_a_check_answered_by_more_reviewers_than_the_overlap_never_completes(
    project, queue, make_reviewer, make_items
):
    queue.overlap = 1
    make_items(queue, 10)
    gold_queue(queue, make_gold(project, ["k"]), rate=0.5)
    reviewers = [make_reviewer(f"r{i}", queue) for i in range(4)]
    for reviewer in reviewers:
        seed_where(queue, reviewer, [True])  # the seed is the queue's: set for each in turn
        assert answer(queue, reviewer, verdict="incorrect").gold_item_id is not None

    check = QueueItem.objects.get(gold_item__isnull=False)
    assert check.labels.count() == 4
    assert (check.status, check.labels_count, check.consensus) == ("open", 0, None)
    # the export query of completed items never meets a check
    exported = QueueItem.objects.filter(status="complete", gold_item__isnull=True)
    assert check not in exported
    assert not QueueItem.objects.filter(status="complete", gold_item__isnull=False).exists()
    assert not QueueItem.objects.filter(gold_item__isnull=False).exclude(status="open").exists()
    # adjudication refuses it: it never waits for one
    boss = membership_grant(project=project, username="boss", role=Membership.Role.ADMIN).user
    with pytest.raises(Conflict):
        item_adjudicate(item=check, actor=boss, verdict="correct")


# --- excluded from everything else -----------------------------------------------------------


def _production_view(queue: Queue) -> dict[str, Any]:
    stats = queue_stats(queue=queue)
    return {
        "items": stats["items"],
        "labels": stats["labels"],
        "agreement": stats["agreement"],
        "reviewers": [
            {k: v for k, v in row.items() if not k.startswith("gold")} for row in stats["reviewers"]
        ],
        "consensus": list(
            QueueItem.objects.filter(queue=queue, gold_item__isnull=True)
            .order_by("pk")
            .values_list("pk", "status", "consensus")
        ),
    }


@pytest.mark.parametrize("method", ["majority", "dawid_skene"])
def test_gold_answers_change_no_consensus_agreement_or_statistic(
    project, queue, make_reviewer, make_items, method
):
    # given: 3 reviewers answer 12 items (overlap 2) and gold checks, disagreeing on the checks
    queue.consensus = method
    gold_queue(queue, make_gold(project, [f"k{i}" for i in range(8)]), rate=0.3, seed=3)
    items = make_items(queue, 12)
    position = {item.pk: i for i, item in enumerate(items)}
    reviewers = [make_reviewer(name, queue) for name in ("alice", "bob", "carol")]
    gold_verdict = {"alice": "correct", "bob": "incorrect", "carol": "unsure"}
    while True:
        progressed = False
        for n, reviewer in enumerate(reviewers):
            lease = queue_claim_next(queue=queue, reviewer=reviewer)
            if lease is None:
                continue
            progressed = True
            item = QueueItem.objects.get(pk=lease.item_id)
            if item.gold_item_id is not None:
                verdict = gold_verdict[reviewer.username]
            else:
                verdict = "incorrect" if (position[item.pk] + n) % 3 == 0 else "correct"
            item_label_submit(
                item_id=item.pk,
                reviewer=reviewer,
                answer=label_input({"verdict": verdict}),
                categories=CATEGORIES,
            )
        if not progressed:
            break
    if method == "dawid_skene":
        queue_consensus_recompute(queue_id=queue.pk)
    answered = Counter(
        Label.objects.filter(item__gold_item__isnull=False).values_list(
            "reviewer__username", flat=True
        )
    )
    assert set(answered) == {"alice", "bob", "carol"}
    with_gold = _production_view(queue)
    figures = {row["username"]: row for row in queue_stats(queue=queue)["reviewers"]}

    # when: the gold checks are gone altogether
    QueueItem.objects.filter(gold_item__isnull=False).delete()
    if method == "dawid_skene":
        queue_consensus_recompute(queue_id=queue.pk)

    # then: every production figure is the same as with them
    assert _production_view(queue) == with_gold
    assert with_gold["labels"] == 24
    assert with_gold["items"]["total"] == 12
    for name, expected in (("alice", 0.0), ("bob", 1.0), ("carol", 0.0)):
        row = figures[name]
        assert (row["gold_checks"], row["gold_accuracy"]) == (answered[name], expected)
        assert row["gold_correct"] == (answered[name] if name == "bob" else 0)
    assert queue_stats(queue=queue)["gold_checks"] == 0


def test_sampling_neither_counts_nor_touches_checks(project, queue, alice, make_items):
    # given: production items and two answered checks in the queue
    make_items(queue, 3)
    gold_queue(queue, make_gold(project, ["a", "b"]), rate=0.5)
    seed_where(queue, alice, [True, True])
    assert sorted(served_key(answer(queue, alice)) for _ in range(2)) == ["a", "b"]
    checks = list(QueueItem.objects.filter(gold_item__isnull=False).values_list("pk", "status"))
    assert len(checks) == 2
    Prediction.objects.bulk_create(
        Prediction(
            project=project,
            external_id=f"new-{i}",
            occurred_at=timezone.now(),
            content_hash="z",
            segment={"locale": "de-DE"},
        )
        for i in range(7)
    )
    queue.strategy, queue.size = "uniform", 5
    queue.save()

    # when
    run = SamplingRun.objects.create(queue=queue, seed=1, policy=policy_of(queue))
    run = sampling_run_execute(run_id=run.pk)

    # then: the population is the 7 predictions not in the queue; the checks are untouched
    assert run.status == "done", run.error
    assert run.population == {"": 7}
    assert run.sampled == {"": 5}
    assert QueueItem.objects.filter(queue=queue, gold_item__isnull=True).count() == 8
    assert checks == list(
        QueueItem.objects.filter(gold_item__isnull=False).values_list("pk", "status")
    )


def test_the_admin_lists_and_counts_production_items_only(project, queue, alice, make_items):
    make_items(queue, 3)
    gold_queue(queue, make_gold(project, ["a"]), rate=0.5)
    seed_where(queue, alice, [True])
    assert answer(queue, alice).gold_item_id is not None
    boss = membership_grant(project=project, username="boss", role=Membership.Role.ADMIN).user
    client = Client()
    client.force_login(boss)

    items = client.get(reverse("admin:labeling_queueitem_changelist"))
    queues = client.get(reverse("admin:labeling_queue_changelist"))

    assert items.status_code == 200
    assert {item.gold_item_id for item in items.context["cl"].result_list} == {None}
    assert len(items.context["cl"].result_list) == 3
    (row,) = queues.context["cl"].result_list
    assert (row.open_count, row.complete_count) == (3, 0)


# --- accuracy, where it is shown --------------------------------------------------------------


def test_stats_api_reports_gold_accuracy_to_readers(project, queue, alice, make_items, data_client):
    make_items(queue, 4)
    gold_queue(queue, make_gold(project, ["a", "b", "c"], verdict="incorrect"), rate=0.5)
    seed_where(queue, alice, [True, True, True, False])
    for verdict in ("incorrect", "correct", "incorrect", "correct"):
        answer(queue, alice, verdict=verdict)
    scientist = membership_grant(
        project=project, username="sci", role=Membership.Role.DATA_SCIENTIST
    ).user

    for client in (data_client, as_user(scientist)):
        body = client.get(f"/api/v1/queues/{queue.pk}/stats").json()

        assert body["labels"] == 1
        assert body["gold_checks"] == 3
        assert body["items"] == {"open": 4, "adjudication": 0, "complete": 0, "total": 4}
        (row,) = body["reviewers"]
        assert (row["username"], row["labels"]) == ("alice", 1)
        assert (row["gold_checks"], row["gold_correct"]) == (3, 2)
        assert row["gold_accuracy"] == pytest.approx(2 / 3)


def test_the_dashboard_shows_gold_accuracy_to_project_admins(project, queue, alice, make_items):
    make_items(queue, 2)
    gold_queue(queue, make_gold(project, ["a", "b"], verdict="incorrect"), rate=0.5)
    seed_where(queue, alice, [True, True])
    answer(queue, alice, verdict="incorrect")
    answer(queue, alice, verdict="correct")
    boss = membership_grant(project=project, username="boss", role=Membership.Role.ADMIN).user
    client = Client()
    client.force_login(boss)
    url = reverse("admin:labeling_queue_dashboard", args=[queue.pk])

    html = " ".join(client.get(url).content.decode().split())

    assert '<td class="number gold-checks">2 (1)</td>' in html
    assert '<td class="number gold-accuracy">50%</td>' in html
    reviewer = Client()
    reviewer.force_login(alice)
    assert reviewer.get(url).status_code == 403


# --- configuration ----------------------------------------------------------------------------


@pytest.fixture
def boss_api(project):
    boss = membership_grant(project=project, username="boss", role=Membership.Role.ADMIN).user
    return as_user(boss)


def test_gold_set_and_rate_are_set_and_read_through_the_api(project, queue, boss_api):
    make_gold(project, ["a"], slug="support-checks")

    response = boss_api.patch(
        f"/api/v1/queues/{queue.pk}",
        {"gold_set": "support-checks", "gold_rate": 0.1},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert (response.json()["gold_set"], response.json()["gold_rate"]) == ("support-checks", 0.1)
    queue.refresh_from_db()
    assert (queue.gold_set.slug, queue.gold_rate) == ("support-checks", 0.1)
    off = boss_api.patch(f"/api/v1/queues/{queue.pk}", {"gold_set": None}, format="json")
    assert off.json()["gold_set"] is None
    created = boss_api.post(
        "/api/v1/queues",
        {
            "name": "with checks",
            "project": project.slug,
            "gold_set": "support-checks",
            "gold_rate": 0.25,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert (created.json()["gold_set"], created.json()["gold_rate"]) == ("support-checks", 0.25)


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"gold_rate": 0.6}, "gold_rate", "max_value"),
        ({"gold_rate": -0.1}, "gold_rate", "min_value"),
        ({"gold_rate": "often"}, "gold_rate", "invalid"),
        ({"gold_rate": [0.1]}, "gold_rate", "invalid"),
        ({"gold_set": "nope"}, "gold_set", "not_found"),
        ({"gold_set": "theirs"}, "gold_set", "not_found"),  # another project's gold set
        ({"gold_set": {"slug": "checks"}}, "gold_set", "invalid"),
    ],
)
def test_bad_gold_configurations_are_400_naming_the_field(
    project, other_project, queue, boss_api, body, field, code
):
    make_gold(project, ["a"], slug="checks")
    make_gold(other_project, ["a"], slug="theirs")

    response = boss_api.patch(f"/api/v1/queues/{queue.pk}", body, format="json")

    assert response.status_code == 400, response.content
    errors = {(e["field"], e["code"]) for e in response.json()["errors"]}
    assert (field, code) in errors
    queue.refresh_from_db()
    assert (queue.gold_set_id, queue.gold_rate) == (None, 0.0)


def test_the_service_refuses_another_projects_set_and_a_rate_over_half(
    project, other_project, queue
):
    theirs = make_gold(other_project, ["a"], slug="theirs").gold_set

    with pytest.raises(InvalidInput) as other:
        queue_update(queue=queue, data={"gold_set": theirs})
    # The rate is the payload's to check, for the service's every caller (queue_input).
    with pytest.raises(InvalidInput) as high:
        queue_update(queue=queue, data=queue_input({"gold_rate": 0.75}, partial=True))
    with pytest.raises(InvalidInput) as flag:
        queue_update(queue=queue, data=queue_input({"gold_rate": True}, partial=True))

    assert [(e.field, e.code) for e in other.value.errors] == [("gold_set", "other_project")]
    assert [(e.field, e.code) for e in high.value.errors] == [("gold_rate", "max_value")]
    assert [(e.field, e.code) for e in flag.value.errors] == [("gold_rate", "invalid")]


def test_the_queue_admin_form_sets_gold_checks(project, other_project, queue):
    mine = make_gold(project, ["a"], slug="mine").gold_set
    theirs = make_gold(other_project, ["a"], slug="theirs").gold_set
    boss = membership_grant(project=project, username="boss", role=Membership.Role.ADMIN).user
    client = Client()
    client.force_login(boss)
    url = reverse("admin:labeling_queue_change", args=[queue.pk])
    page = client.get(url)
    offered = set(page.context["adminform"].form.fields["gold_set"].queryset)
    assert offered == {mine}
    data = form_data(page)

    too_high = client.post(url, {**data, "gold_set": str(mine.pk), "gold_rate": "0.7"})
    foreign = client.post(url, {**data, "gold_set": str(theirs.pk), "gold_rate": "0.1"})
    saved = client.post(url, {**data, "gold_set": str(mine.pk), "gold_rate": "0.2"})

    assert "gold_rate" in too_high.context["adminform"].form.errors
    assert "gold_set" in foreign.context["adminform"].form.errors
    assert saved.status_code == 302
    queue.refresh_from_db()
    assert (queue.gold_set, queue.gold_rate) == (mine, 0.2)


# --- PostgreSQL: concurrency and the claim index -----------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reviewers_claiming_checks_at_once_make_each_check_once(queue, make_items, make_reviewer):
    # given: 8 reviewers (2 threads each) and a gold set of 3 at a high rate, so their first
    # checks collide on the same gold items
    project = queue.project
    queue.overlap = 2
    gold_queue(queue, make_gold(project, ["a", "b", "c"]), rate=0.5, seed=5)
    make_items(queue, 40)
    reviewers = [make_reviewer(f"r{i}", queue) for i in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def work(reviewer):
        try:
            start.wait()
            while True:
                lease = queue_claim_next(queue=queue, reviewer=reviewer)
                if lease is None:
                    return
                # Conflict: a sibling thread of this reviewer was first
                with contextlib.suppress(Conflict):
                    item_label_submit(
                        item_id=lease.item_id,
                        reviewer=reviewer,
                        answer=label_input({"verdict": "incorrect"}),
                        categories=set(),
                    )
        except BaseException as exc:  # surfaced below: a thread must not fail silently
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(r,)) for r in reviewers for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    # then: each check exists once, no reviewer answered one twice, production is exact
    assert not errors, errors[:3]
    checks = QueueItem.objects.filter(gold_item__isnull=False)
    assert sorted(checks.values_list("gold_item__key", flat=True)) == ["a", "b", "c"]
    gold_pairs = list(
        Label.objects.filter(item__gold_item__isnull=False).values_list("item_id", "reviewer_id")
    )
    assert len(gold_pairs) == len(set(gold_pairs)) > 0
    assert set(checks.values_list("status", "labels_count")) == {("open", 0)}
    production = QueueItem.objects.filter(gold_item__isnull=True)
    assert set(production.values_list("status", "labels_count")) == {("complete", 2)}
    assert Label.objects.filter(item__gold_item__isnull=True).count() == 80


@pytest.mark.postgres
def test_the_production_claim_can_use_the_partial_claim_index(queue, make_items, make_reviewer):
    from labeling.services.claims import NEXT_ITEM_SQL

    make_items(queue, 5)
    reviewer = make_reviewer("alice", queue)
    params = {
        "queue": queue.pk,
        "reviewer": reviewer.pk,
        "now": timezone.now(),
        "skip_since": timezone.now(),
        "overlap": 2,
        "passed": [],
    }
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + NEXT_ITEM_SQL, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "item_claim_order" in plan, plan
