"""The labeling admin through real logins: the queue list and its counts, queue edits through the
services (an impossible policy is a form error), "Sample now", the dashboard, adjudication,
project scoping, and the sample_queue / create_reviewer commands."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from feedback.models import Feedback, Membership, Prediction
from feedback.selectors import active_categories, project_context
from feedback.services.intake import feedback_submit
from feedback.services.projects import membership_grant
from labeling.models import Label, Queue, QueueItem, SamplingRun
from labeling.payloads.labels import label_input
from labeling.services.claims import queue_claim_next
from labeling.services.labels import item_label_submit, label_update
from labeling.services.sampling import sampling_run_execute
from tests.feedback.test_admin import form_data, messages_of

pytestmark = pytest.mark.django_db

QUEUES = reverse("admin:labeling_queue_changelist")
ITEMS = reverse("admin:labeling_queueitem_changelist")


# --- helpers ---------------------------------------------------------------------------------


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def member(project, username: str, role: str = Membership.Role.ADMIN):
    return membership_grant(project=project, username=username, role=role).user


def make_predictions(project, per_locale: dict[str, int]) -> None:
    from django.utils import timezone

    Prediction.objects.bulk_create(
        Prediction(
            project=project,
            external_id=f"{locale}-{i}",
            segment={"locale": locale},
            occurred_at=timezone.now(),
            content_hash="x",
        )
        for locale, count in per_locale.items()
        for i in range(count)
    )


def label_in_order(queue: Queue, reviewer, verdicts: list[str], **extra: Any) -> None:
    """The reviewer claims items in queue order and gives them these verdicts; the i-th label
    took 10 + i seconds."""
    categories = set(active_categories(project_id=queue.project_id))
    for position, verdict in enumerate(verdicts):
        lease = queue_claim_next(queue=queue, reviewer=reviewer)
        assert lease is not None
        item_label_submit(
            item_id=lease.item_id,
            reviewer=reviewer,
            answer=label_input({"verdict": verdict, "seconds_spent": 10 + position, **extra}),
            categories=categories,
        )


@pytest.fixture
def tied_item(queue, make_items, make_reviewer) -> QueueItem:
    """An item of ``queue`` (overlap 2) where alice said correct and bob incorrect."""
    (item,) = make_items(queue, 1)
    label_in_order(queue, make_reviewer("alice", queue), ["correct"])
    label_in_order(queue, make_reviewer("bob", queue), ["incorrect"])
    item.refresh_from_db()
    assert item.status == QueueItem.Status.ADJUDICATION
    return item


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# --- the queue list --------------------------------------------------------------------------


def test_queue_list_counts_items_by_status_and_reviewers(project, make_items, make_reviewer):
    review = Queue.objects.create(project=project, name="review", source="disputes")
    empty = Queue.objects.create(project=project, name="empty")
    items = make_items(review, 6)
    set_status(items[3:5], QueueItem.Status.COMPLETE)
    set_status(items[5:], QueueItem.Status.ADJUDICATION)
    make_reviewer("alice", review)
    make_reviewer("bob", review)

    response = logged_in(member(project, "pm")).get(QUEUES)

    assert response.status_code == 200
    rows = {queue.name: queue for queue in response.context["cl"].result_list}
    assert (rows["review"].open_count, rows["review"].adjudication_count) == (3, 1)
    assert (rows["review"].complete_count, rows["review"].reviewers_count) == (2, 2)
    assert (rows["empty"].open_count, rows["empty"].reviewers_count) == (0, 0)
    html = response.content.decode()
    assert reverse("admin:labeling_queue_dashboard", args=[empty.pk]) in html
    assert "disputes / all" in html


def set_status(items: list[QueueItem], status: str) -> None:
    QueueItem.objects.filter(pk__in=[i.pk for i in items]).update(status=status)


def test_queue_list_query_count_does_not_grow_with_queues(project, make_items):
    admin = member(project, "pm")
    client = logged_in(admin)

    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(QUEUES).status_code == 200
        return len(queries)

    for n in range(2):
        make_items(Queue.objects.create(project=project, name=f"q{n}"), 3, prefix=f"a{n}")
    few = queries_for_list()
    for n in range(2, 8):
        queue = Queue.objects.create(project=project, name=f"q{n}")
        make_items(queue, 3, prefix=f"a{n}")
        queue.reviewers.add(admin)

    assert queries_for_list() == few


def test_another_projects_queues_are_invisible(project, other_project, queue, make_items):
    elsewhere = Queue.objects.create(project=other_project, name="theirs")
    (their_item,) = make_items(elsewhere, 1, prefix="o")
    client = logged_in(member(project, "pm"))

    listed = client.get(QUEUES).context["cl"].result_list
    items = client.get(ITEMS).context["cl"].result_list

    assert [q.pk for q in listed] == [queue.pk]
    assert their_item.pk not in [i.pk for i in items]
    change = client.get(reverse("admin:labeling_queue_change", args=[elsewhere.pk]))
    assert change.status_code == 302  # the admin's "does not exist" redirect
    dashboard = reverse("admin:labeling_queue_dashboard", args=[elsewhere.pk])
    assert client.get(dashboard).status_code == 404
    adjudicate = reverse("admin:labeling_queueitem_adjudicate", args=[their_item.pk])
    assert client.get(adjudicate).status_code == 404


def test_a_data_scientist_sees_queues_read_only(project, queue):
    client = logged_in(member(project, "sci", Membership.Role.DATA_SCIENTIST))

    page = client.get(reverse("admin:labeling_queue_change", args=[queue.pk]))

    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert client.get(reverse("admin:labeling_queue_add")).status_code == 403
    dashboard = reverse("admin:labeling_queue_dashboard", args=[queue.pk])
    assert client.get(dashboard).status_code == 403


# --- editing a queue -------------------------------------------------------------------------


def test_an_impossible_policy_is_a_form_error_and_nothing_is_saved(project, queue):
    client = logged_in(member(project, "pm"))
    url = reverse("admin:labeling_queue_change", args=[queue.pk])
    data = form_data(client.get(url))
    data.update(strategy="stratified", strata="", size="10", name="renamed")

    response = client.post(url, data)

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["strata"] == ["Stratified sampling needs at least one segment key."]
    queue.refresh_from_db()
    assert (queue.name, queue.strategy) == ("review", "all")


def test_size_and_rate_together_are_refused_on_the_size_field(admin_client, queue):
    url = reverse("admin:labeling_queue_change", args=[queue.pk])
    data = form_data(admin_client.get(url))
    data.update(strategy="uniform", size="10", rate="0.5")

    response = admin_client.post(url, data)

    assert "exactly one of size and rate" in response.context["adminform"].form.errors["size"][0]
    queue.refresh_from_db()
    assert queue.strategy == "all"


def test_a_bad_filter_and_duplicate_label_choices_are_form_errors(admin_client, queue):
    url = reverse("admin:labeling_queue_change", args=[queue.pk])
    data = form_data(admin_client.get(url))
    data.update(filter='{"colour": "red"}', label_choices="yes, no, yes")

    errors = admin_client.post(url, data).context["adminform"].form.errors

    assert "Unknown filter" in errors["filter"][0]
    assert errors["label_choices"] == ["Label choices must be distinct: yes."]


def test_a_valid_edit_is_saved_with_members_as_reviewers(project, other_project, queue):
    client = logged_in(member(project, "pm"))
    alice = member(project, "alice", Membership.Role.REVIEWER)
    outsider = member(other_project, "olga", Membership.Role.REVIEWER)
    url = reverse("admin:labeling_queue_change", args=[queue.pk])
    page = client.get(url)
    offered = set(page.context["adminform"].form.fields["reviewers"].queryset)
    assert alice in offered and outsider not in offered
    data = form_data(page)
    data.update(
        label_choices="refund, cancel",
        strategy="stratified",
        strata="locale, device",
        rate="0.2",
        filter='{"model_version": "v2"}',
        reviewers=[str(alice.pk)],
    )

    response = client.post(url, data)

    assert response.status_code == 302
    queue.refresh_from_db()
    assert queue.label_choices == ["refund", "cancel"]
    assert (queue.strategy, queue.strata, queue.rate) == ("stratified", ["locale", "device"], 0.2)
    assert queue.filter == {"model_version": "v2"}
    assert list(queue.reviewers.all()) == [alice]
    data["reviewers"] = [str(outsider.pk)]
    refused = client.post(url, data)
    assert "reviewers" in refused.context["adminform"].form.errors


def test_renaming_onto_another_queue_is_a_form_error(admin_client, project, queue):
    Queue.objects.create(project=project, name="taken")
    url = reverse("admin:labeling_queue_change", args=[queue.pk])
    data = form_data(admin_client.get(url)) | {"name": "taken"}

    errors = admin_client.post(url, data).context["adminform"].form.errors

    assert errors["name"] == ["Another queue of this project has this name."]


def test_adding_a_queue_goes_through_the_service(project, other_project):
    client = logged_in(member(project, "pm"))
    page = client.get(reverse("admin:labeling_queue_add"))
    assert list(page.context["adminform"].form.fields["project"].queryset) == [project]
    assert "reviewers" not in page.context["adminform"].form.fields
    data = form_data(page) | {
        "project": str(project.pk),
        "name": "disputes",
        "source": "disputes",
        "label_choices": "approve, deny",
        "overlap": "3",
    }

    response = client.post(reverse("admin:labeling_queue_add"), data)

    assert response.status_code == 302
    queue = Queue.objects.get(name="disputes")
    assert (queue.project, queue.overlap, queue.label_choices) == (project, 3, ["approve", "deny"])
    elsewhere = data | {"project": str(other_project.pk), "name": "sneaky"}
    refused = client.post(reverse("admin:labeling_queue_add"), elsewhere)
    assert "project" in refused.context["adminform"].form.errors
    assert not Queue.objects.filter(name="sneaky").exists()


# --- sampling --------------------------------------------------------------------------------


def test_sample_now_requests_a_run_that_draws_the_items(
    project, queue, django_capture_on_commit_callbacks
):
    make_predictions(project, {"de": 6, "fr": 4})
    pm = member(project, "pm")
    client = logged_in(pm)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            QUEUES, {"action": "sample_now", "_selected_action": [queue.pk], "index": "0"}
        )

    assert response.status_code == 302
    run = SamplingRun.objects.get()
    assert (run.queue, run.status, run.requested_by) == (queue, "pending", pm)
    assert len(callbacks) == 1  # the draw is enqueued after commit, never inline
    (message,) = messages_of(client.get(QUEUES))
    assert f"#{run.pk} ({queue})" in message

    run = sampling_run_execute(run_id=run.pk)

    assert run.status == "done"
    assert run.population == run.sampled == {"": 10}
    assert queue.items.count() == 10
    detail = client.get(reverse("admin:labeling_samplingrun_change", args=[run.pk]))
    assert detail.status_code == 200
    assert "(all): 10 → 10" in detail.content.decode()


def test_sample_now_is_refused_where_the_person_only_reads(
    project, other_project, django_capture_on_commit_callbacks
):
    theirs = Queue.objects.create(project=other_project, name="theirs")
    person = member(project, "pm")
    membership_grant(
        project=other_project, username="pm", role=Membership.Role.DATA_SCIENTIST
    )  # an admin in project, a data scientist in other_project

    with django_capture_on_commit_callbacks(execute=False):
        logged_in(person).post(
            QUEUES, {"action": "sample_now", "_selected_action": [theirs.pk], "index": "0"}
        )

    assert not SamplingRun.objects.exists()


def test_sampling_run_list_is_read_only_and_filters_by_queue(admin_client, project, queue):
    other = Queue.objects.create(project=project, name="other")
    mine = SamplingRun.objects.create(queue=queue, seed=1, status="done")
    SamplingRun.objects.create(queue=other, seed=2, status="failed", error="boom")
    url = reverse("admin:labeling_samplingrun_changelist")

    filtered = admin_client.get(url, {"queue": queue.pk})

    assert [r.pk for r in filtered.context["cl"].result_list] == [mine.pk]
    assert admin_client.get(url, {"status": "failed"}).context["cl"].result_count == 1
    assert admin_client.get(reverse("admin:labeling_samplingrun_add")).status_code == 403
    detail = admin_client.get(reverse("admin:labeling_samplingrun_change", args=[mine.pk]))
    assert detail.context["has_change_permission"] is False


# --- the dashboard ---------------------------------------------------------------------------


def test_dashboard_shows_the_queue_figures(project, queue, make_items, make_reviewer):
    make_items(queue, 5)
    verdicts = {
        "alice": ["correct", "incorrect", "correct", "correct"],
        "bob": ["correct", "incorrect", "incorrect", "correct"],
    }
    for name, theirs in verdicts.items():
        label_in_order(queue, make_reviewer(name, queue), theirs)
    SamplingRun.objects.create(
        queue=queue,
        seed=42,
        status="done",
        population={"locale=de": 30, "locale=fr": 10},
        sampled={"locale=de": 3, "locale=fr": 1},
    )
    SamplingRun.objects.create(queue=queue, seed=43, status="failed", error="No such segment.")
    waiting = QueueItem.objects.get(status=QueueItem.Status.ADJUDICATION)

    response = logged_in(member(project, "pm")).get(
        reverse("admin:labeling_queue_dashboard", args=[queue.pk])
    )

    assert response.status_code == 200
    stats = response.context["stats"]
    assert stats["items"] == {"open": 1, "adjudication": 1, "complete": 3, "total": 5}
    html = " ".join(response.content.decode().split())
    for figure, name in [
        ("1", "open"),
        ("1", "waiting for adjudication"),
        ("3", "complete"),
        ("5", "in all"),
        ("8", "labels"),
        ("0.533", "Krippendorff's alpha"),  # 1 - (2/8) / (2·5·3 / (8·7))
        ("0.500", "mean pairwise Cohen's kappa"),  # (0.75 - 0.5) / (1 - 0.5)
        ("75%", "percent agreement"),
    ]:
        assert f'<span class="value">{figure}</span><span class="name">{name}</span>' in html
    # alice: 4 labels, median of 10..13 seconds, agrees with all 3 decided items
    assert '<td>alice</td> <td class="number">4</td> <td class="number">11.5</td>' in html
    assert '<td class="number">100%</td>' in html
    assert 'locale=de</td><td class="number">30</td><td>→</td><td class="number">3</td>' in html
    assert "No such segment." in html
    assert reverse("admin:labeling_queueitem_adjudicate", args=[waiting.pk]) in html


def test_agreement_over_items_nobody_else_labeled_is_no_overlap(
    project, queue, make_items, make_reviewer
):
    # given: overlap 1, so every item's only label is its reviewer's own
    queue.overlap = 1
    queue.save()
    make_items(queue, 3)
    label_in_order(queue, make_reviewer("alice", queue), ["correct", "incorrect", "correct"])

    response = logged_in(member(project, "pm")).get(
        reverse("admin:labeling_queue_dashboard", args=[queue.pk])
    )

    (alice,) = response.context["stats"]["reviewers"]
    assert alice["labels"] == 3 and alice["agreement_with_consensus"] is None
    html = response.content.decode()
    assert ">no overlap</span>" in html
    assert '<td class="number">100%</td>' not in html


def test_the_queue_list_shows_the_dashboard_link_beside_the_name(project, queue):
    html = logged_in(member(project, "pm")).get(QUEUES).content.decode()

    header = html[html.index('<table id="result_list">') :]
    assert header.index('class="sortable column-name') < header.index("column-dashboard_link")
    assert header.index("column-dashboard_link") < header.index("column-project")


def test_dashboard_is_for_project_admins_only(project, queue, make_reviewer):
    url = reverse("admin:labeling_queue_dashboard", args=[queue.pk])

    assert logged_in(make_reviewer("alice", queue)).get(url).status_code == 403
    assert logged_in(member(project, "pm")).get(url).status_code == 200


def test_the_workspace_is_mounted_under_the_queue_admin():
    assert reverse("admin:labeling_workspace_index") == "/admin/labeling/queue/workspace/"
    assert reverse("admin:labeling_workspace", args=[3]) == "/admin/labeling/queue/workspace/3/"


# --- items and adjudication ------------------------------------------------------------------


def test_adjudication_completes_the_item_and_resolves_its_dispute(project, queue, tied_item):
    (dispute,) = feedback_submit(
        context=project_context(project=project),
        items=[{"prediction": tied_item.prediction.external_id, "kind": "dispute"}],
    )
    pm = member(project, "pm")
    client = logged_in(pm)
    url = reverse("admin:labeling_queueitem_adjudicate", args=[tied_item.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert "true_label" not in page.context["form"].fields  # the queue has no label choices

    response = client.post(url, {"verdict": "incorrect", "note": "Wrong refund date."})

    assert response.status_code == 302
    assert response.url == reverse("admin:labeling_queue_dashboard", args=[queue.pk])
    tied_item.refresh_from_db()
    assert tied_item.status == QueueItem.Status.COMPLETE
    assert tied_item.consensus["verdict"] == "incorrect"
    assert tied_item.consensus["method"] == "adjudicated"
    assert tied_item.consensus["adjudicated_by"] == "pm"
    assert tied_item.consensus["note"] == "Wrong refund date."
    dispute_row = Feedback.objects.get(pk=dispute.obj.pk)
    assert dispute_row.status == Feedback.DisputeStatus.UPHELD
    assert dispute_row.resolved_by == pm
    again = client.get(url)  # nothing left to settle: back to the item page
    assert again.status_code == 302
    assert again.url == reverse("admin:labeling_queueitem_change", args=[tied_item.pk])


def test_adjudication_asks_for_the_true_label_when_the_queue_has_choices(project, queue, tied_item):
    Queue.objects.filter(pk=queue.pk).update(label_choices=["refund", "cancel"])
    client = logged_in(member(project, "pm"))
    url = reverse("admin:labeling_queueitem_adjudicate", args=[tied_item.pk])

    refused = client.post(url, {"verdict": "correct"})
    settled = client.post(url, {"verdict": "correct", "true_label": "cancel"})

    assert "true_label" in refused.context["form"].errors
    assert settled.status_code == 302
    tied_item.refresh_from_db()
    assert (tied_item.consensus["verdict"], tied_item.consensus["true_label"]) == (
        "correct",
        "cancel",
    )


def test_only_project_admins_adjudicate(project, tied_item):
    url = reverse("admin:labeling_queueitem_adjudicate", args=[tied_item.pk])
    scientist = logged_in(member(project, "sci", Membership.Role.DATA_SCIENTIST))

    assert scientist.get(url).status_code == 403
    assert scientist.post(url, {"verdict": "correct"}).status_code == 403
    tied_item.refresh_from_db()
    assert tied_item.status == QueueItem.Status.ADJUDICATION


def test_item_list_links_adjudication_and_keeps_its_query_count(
    project, queue, make_items, tied_item
):
    client = logged_in(member(project, "pm"))

    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(ITEMS)
        assert response.status_code == 200
        return len(queries)

    few = queries_for_list()
    make_items(queue, 20, prefix="more")
    assert queries_for_list() == few

    response = client.get(ITEMS, {"status": "adjudication"})
    assert [i.pk for i in response.context["cl"].result_list] == [tied_item.pk]
    assert reverse("admin:labeling_queueitem_adjudicate", args=[tied_item.pk]) in (
        response.content.decode()
    )


def test_item_page_shows_labels_with_their_history(project, queue, tied_item):
    label = Label.objects.get(item=tied_item, reviewer__username="alice")
    label_update(
        label=label,
        actor=label.reviewer,
        answer=label_input({"verdict": "unsure", "notes": "not sure after all"}),
        categories=set(),
    )

    page = logged_in(member(project, "pm")).get(
        reverse("admin:labeling_queueitem_change", args=[tied_item.pk])
    )

    assert page.status_code == 200
    html = page.content.decode()
    assert "not sure after all" in html
    assert "by alice: was correct" in html
    assert page.context["has_change_permission"] is False


# --- commands --------------------------------------------------------------------------------


def test_sample_queue_now_draws_and_prints_per_stratum(project):
    make_predictions(project, {"de": 30, "fr": 10})
    queue = Queue.objects.create(
        project=project, name="strat", strategy="stratified", strata=["locale"], size=8
    )

    output = run_command("sample_queue", str(queue.pk), "--seed", "5", "--now")

    run = SamplingRun.objects.get()
    assert (run.status, run.seed, run.trigger) == ("done", 5, "command")
    lines = [line.split() for line in output.splitlines()]
    assert lines[0] == ["Run", str(run.pk), "of", str(queue), "(seed", "5):", "done"]
    assert ["locale=de", "30", "6"] in lines
    assert ["locale=fr", "10", "2"] in lines
    assert ["total", "40", "8"] in lines
    assert queue.items.count() == 8


def test_sample_queue_without_now_leaves_the_draw_to_a_worker(
    project, queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        output = run_command("sample_queue", str(queue.pk))

    run = SamplingRun.objects.get()
    assert run.status == "pending"
    assert output.startswith(f"Run {run.pk} of {queue}")
    assert len(callbacks) == 1
    with pytest.raises(CommandError, match="No queue 999999"):
        run_command("sample_queue", "999999")


def test_create_reviewer_with_queues_assigns_them(project, queue):
    other = Queue.objects.create(project=project, name="second")

    output = run_command(
        "create_reviewer", "carol", "--project", project.slug, "--queue", str(queue.pk),
        "--queue", str(other.pk),
    )  # fmt: skip

    carol = get_user_model().objects.get(username="carol")
    assert set(carol.review_queues.all()) == {queue, other}
    assert f"reviewing in queue(s) {queue.pk}, {other.pk}" in output


def test_create_reviewer_refuses_another_projects_queue_and_creates_nobody(project, other_project):
    theirs = Queue.objects.create(project=other_project, name="theirs")

    with pytest.raises(CommandError, match="No queue"):
        run_command("create_reviewer", "dave", "--project", project.slug, "--queue", str(theirs.pk))

    assert not get_user_model().objects.filter(username="dave").exists()
