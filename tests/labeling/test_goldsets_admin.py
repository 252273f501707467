"""The gold-set admin through real logins: scoping by role, creating a gold set, editing a
draft's items through the services, a published version read-only with a clear message, the
publish and new-draft actions, the diff page, and "Promote to gold draft" on queue items."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from feedback.models import Membership
from feedback.services.projects import membership_grant
from labeling.models import GoldItem, GoldSet, GoldSetVersion, Queue
from labeling.payloads.gold import gold_item_input
from labeling.services.goldsets import (
    gold_item_add,
    gold_item_remove,
    gold_item_update,
    goldset_create,
    goldset_version_create_draft,
    goldset_version_publish,
)
from tests.feedback.test_admin import form_data, messages_of

from .test_goldsets import item_payload, published, review

pytestmark = pytest.mark.django_db

GOLD_SETS = reverse("admin:labeling_goldset_changelist")
ITEMS = reverse("admin:labeling_queueitem_changelist")


def logged_in(project, username: str, role: str = Membership.Role.DATA_SCIENTIST) -> Client:
    user = membership_grant(project=project, username=username, role=role).user
    client = Client()
    client.force_login(user)
    return client


def version_url(version: GoldSetVersion) -> str:
    return reverse("admin:labeling_goldsetversion_change", args=[version.pk])


# --- who sees gold ---------------------------------------------------------------------------


def test_gold_sets_are_shown_to_data_scientists_of_the_project_only(project, other_project):
    ours = goldset_create(project=project, slug="ours")
    theirs = goldset_create(project=other_project, slug="theirs")
    scientist = logged_in(project, "dana")
    reviewer = logged_in(project, "rita", Membership.Role.REVIEWER)

    listing = scientist.get(GOLD_SETS)
    foreign = scientist.get(reverse("admin:labeling_goldset_change", args=[theirs.pk]))
    foreign_version = scientist.get(version_url(theirs.versions.get()))
    denied = reviewer.get(GOLD_SETS)
    denied_version = reviewer.get(version_url(ours.versions.get()))
    index = reviewer.get(reverse("admin:index"))

    assert listing.status_code == 200
    assert [g.slug for g in listing.context["cl"].result_list] == ["ours"]
    assert foreign.status_code == 302 and foreign_version.status_code == 302  # "no such object"
    assert (denied.status_code, denied_version.status_code) == (403, 403)
    assert b"Gold set" not in index.content


def test_a_gold_set_created_in_the_admin_has_draft_v1(project, other_project):
    scientist = logged_in(project, "dana")

    form = scientist.get(reverse("admin:labeling_goldset_add"))
    response = scientist.post(
        reverse("admin:labeling_goldset_add"),
        {"project": project.pk, "slug": "eval", "name": "Eval", "description": ""},
        follow=True,
    )
    elsewhere = scientist.post(
        reverse("admin:labeling_goldset_add"),
        {"project": other_project.pk, "slug": "x", "name": "X", "description": ""},
    )

    assert [p.pk for p in form.context["adminform"].form.fields["project"].queryset] == [project.pk]
    assert response.status_code == 200
    gold_set = GoldSet.objects.get(slug="eval")
    assert list(gold_set.versions.values_list("number", "status")) == [(1, "draft")]
    assert gold_set.created_by.username == "dana"
    assert elsewhere.status_code == 200 and elsewhere.context["adminform"].form.errors
    assert not GoldSet.objects.filter(slug="x").exists()


# --- draft items, published versions ---------------------------------------------------------


def test_draft_items_are_edited_through_the_services(project):
    gold_set = goldset_create(project=project, slug="eval")
    draft = gold_set.versions.get()
    gold_item_add(version=draft, item=gold_item_input(item_payload("a")))
    gold_item_add(version=draft, item=gold_item_input(item_payload("b")))
    scientist = logged_in(project, "dana")
    page = scientist.get(version_url(draft))
    data = form_data(page)
    # change a, delete b, add c
    data["items-0-expected_verdict"] = "correct"
    data["items-1-DELETE"] = "on"
    data.update(
        {
            "items-TOTAL_FORMS": "3",
            "items-2-key": "c",
            "items-2-expected_verdict": "unsure",
            "items-2-expected_label": "",
            "items-2-expected_categories": "unsafe, incorrect",
            "items-2-input": json.dumps({"message": "hi"}),
            "items-2-output": "null",
            "items-2-segment": json.dumps({"locale": "fr-FR"}),
            "items-2-version": str(draft.pk),
        }
    )

    response = scientist.post(version_url(draft), data, follow=True)

    assert response.status_code == 200, messages_of(response)
    draft.refresh_from_db()
    assert draft.item_count == 2  # kept by the services, not recounted by the admin
    assert list(draft.items.values_list("key", "expected_verdict", "expected_categories")) == [
        ("a", "correct", ["incorrect"]),
        ("c", "unsure", ["incorrect", "unsafe"]),
    ]
    assert draft.items.get(key="c").segment == {"locale": "fr-FR"}


def test_an_unknown_category_in_the_inline_is_refused_with_a_message(project):
    draft = goldset_create(project=project, slug="eval").versions.get()
    gold_item_add(version=draft, item=gold_item_input(item_payload("a")))
    scientist = logged_in(project, "dana")
    data = form_data(scientist.get(version_url(draft)))
    data["items-0-expected_categories"] = "incorrect, rude"

    response = scientist.post(version_url(draft), data, follow=True)

    assert any("'rude' is not a category" in m for m in messages_of(response))
    assert draft.items.get().expected_categories == ["incorrect"]


def test_a_published_version_is_read_only_and_says_why(project):
    draft = goldset_create(project=project, slug="eval").versions.get()
    gold_item_add(version=draft, item=gold_item_input(item_payload("a")))
    scientist = logged_in(project, "dana")
    stale_form = form_data(scientist.get(version_url(draft)))  # opened while a draft
    version = goldset_version_publish(version=draft)

    page = scientist.get(version_url(version))
    stale_form["items-0-expected_verdict"] = "correct"
    saved = scientist.post(version_url(version), stale_form, follow=True)

    assert page.status_code == 200
    assert any("frozen for good" in m for m in messages_of(page))
    assert b'name="items-0-key"' not in page.content  # no editable item fields
    assert b"answer a" in page.content  # but the content is shown
    assert any(m.startswith("Not saved:") and "frozen for good" in m for m in messages_of(saved))
    assert GoldItem.objects.get(version=version).expected_verdict == "incorrect"


# --- actions and the diff page ---------------------------------------------------------------


def test_publish_and_new_draft_actions(project):
    gold_set = goldset_create(project=project, slug="eval")
    gold_item_add(version=gold_set.versions.get(), item=gold_item_input(item_payload("a")))
    empty = goldset_create(project=project, slug="empty")
    scientist = logged_in(project, "dana")

    def act(action: str, *sets: GoldSet):
        return scientist.post(
            GOLD_SETS,
            {"action": action, "_selected_action": [g.pk for g in sets], "index": "0"},
            follow=True,
        )

    publish = act("publish_draft", gold_set, empty)
    draft = act("start_draft", gold_set)
    again = act("start_draft", gold_set)

    v1 = GoldSetVersion.objects.get(gold_set=gold_set, number=1)
    assert v1.status == "published" and len(v1.checksum) == 64
    assert any(
        m.startswith("Published eval v1 (1 item, sha256 " + v1.checksum[:12])
        for m in messages_of(publish)
    )
    assert any("empty v1: v1 has no items" in m for m in messages_of(publish))
    assert any(m.startswith("Started 1 draft: eval v2 (1 items)") for m in messages_of(draft))
    assert any("draft already" in m for m in messages_of(again))
    assert list(gold_set.versions.values_list("number", "status", "item_count")) == [
        (1, "published", 1),
        (2, "draft", 1),
    ]
    page = scientist.get(reverse("admin:labeling_goldset_change", args=[gold_set.pk]))
    listing = scientist.get(GOLD_SETS)
    assert page.status_code == 200
    for version in gold_set.versions.all():
        assert version_url(version).encode() in page.content
    assert reverse("admin:labeling_goldset_diff", args=[gold_set.pk]).encode() in listing.content


def test_diff_page(project):
    v1 = published(project, keys=("a", "b", "c"))
    v2 = goldset_version_create_draft(gold_set=v1.gold_set)
    gold_item_remove(version=v2, keys=["a"])
    gold_item_update(
        version=v2,
        key="b",
        item=gold_item_input(
            {"expected": {"verdict": "correct", "categories": ["incorrect"]}}, partial=True
        ),
    )
    gold_item_add(version=v2, item=gold_item_input(item_payload("d")))
    scientist = logged_in(project, "dana")
    url = reverse("admin:labeling_goldset_diff", args=[v1.gold_set.pk])

    default = scientist.get(url)  # the newest against the version it was copied from
    reverse_diff = scientist.get(url, {"version": 1, "against": 2})

    diff = default.context["diff"]
    assert (diff["version"].number, diff["against"].number) == (2, 1)
    assert [i["key"] for i in diff["added"]] == ["d"]
    assert [i["key"] for i in diff["removed"]] == ["a"]
    assert [(c["key"], c["fields"]) for c in diff["changed"]] == [("b", ["expected.verdict"])]
    assert diff["unchanged"] == 1
    assert b"expected.verdict" in default.content
    other = reverse_diff.context["diff"]
    assert ([i["key"] for i in other["added"]], [i["key"] for i in other["removed"]]) == (
        ["a"],
        ["d"],
    )


# --- promoting queue items -------------------------------------------------------------------


def test_promote_action_reports_promoted_and_skipped_items(project, make_reviewer, make_items):
    queue = Queue.objects.create(project=project, name="trio", overlap=3)
    reviewers = [make_reviewer(name, queue) for name in ("ann", "ben", "cat")]
    clear = review(queue, make_items, reviewers, ["incorrect"] * 3, "c")
    weak = review(queue, make_items, reviewers, ["correct", "unsure", "unsure"], "w")
    (still_open,) = make_items(queue, 1, prefix="o")
    v1 = published(project, keys=("x",))
    goldset_create(project=project, slug="second")
    scientist = logged_in(project, "dana")
    selected = [clear.pk, weak.pk, still_open.pk]

    form = scientist.post(
        ITEMS, {"action": "promote_to_gold", "_selected_action": selected, "index": "0"}
    )
    done = scientist.post(
        ITEMS,
        {
            "action": "promote_to_gold",
            "_selected_action": selected,
            "post": "yes",
            "gold_set": v1.gold_set.pk,
        },
        follow=True,
    )

    assert form.status_code == 200
    assert form.templates[0].name == "admin/labeling/goldset/promote.html"
    choices = [g.slug for g in form.context["form"].fields["gold_set"].queryset]
    assert sorted(choices) == ["eval", "second"]
    shown = messages_of(done)
    assert any(m.startswith("Started draft v2 of eval (1 item copied") for m in shown)
    assert any(
        m.startswith(f"Promoted 1 item to eval v2: {clear.prediction.external_id}") for m in shown
    )
    skipped = next(m for m in shown if m.startswith("Skipped 2 items"))
    assert f"#{weak.pk}: Item {weak.pk}: 33% of its 3 labels agree" in skipped
    assert f"#{still_open.pk}: Item {still_open.pk} is not complete" in skipped
    draft = GoldSetVersion.objects.get(gold_set=v1.gold_set, number=2)
    assert sorted(draft.items.values_list("key", "source_item_id")) == sorted(
        [("x", None), (clear.prediction.external_id, clear.pk)]
    )


def test_promote_action_without_a_gold_set_says_so(project, make_items, queue):
    (item,) = make_items(queue, 1)
    scientist = logged_in(project, "dana")

    response = scientist.post(
        ITEMS,
        {"action": "promote_to_gold", "_selected_action": [item.pk], "index": "0"},
        follow=True,
    )

    assert any("No gold set you curate" in m for m in messages_of(response))
    assert GoldItem.objects.count() == 0


def test_a_published_version_downloads_its_snapshot_from_the_admin(project):
    version = published(project, keys=("a", "b"))
    client = logged_in(project, "dana")

    page = client.get(version_url(version)).content.decode()
    listing = client.get("/admin/labeling/goldsetversion/").content.decode()

    link = f"/api/v1/goldsets/eval/versions/{version.number}/export?format=jsonl&amp;project="
    assert link in page and link in listing
    assert "format=parquet" in page and "format=csv" in page
    # the link works with the admin's session and gives the frozen snapshot
    response = client.get(
        f"/api/v1/goldsets/eval/versions/{version.number}/export",
        {"format": "jsonl", "project": project.slug},
    )
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert len(body.splitlines()) >= 2
    assert response["X-Goldset-Checksum"] == version.checksum
