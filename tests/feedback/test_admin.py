"""The intake admin, driven through real logins: keys shown once and revoked, disputes resolved
through the confirmation page, project scoping, triage filters and query counts, and taxonomy
or project edits reaching cached key lookups at once."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from feedback.models import ApiKey, DisputeEvent, Feedback, FeedbackCategory, Membership, Project
from feedback.selectors import project_context
from feedback.services.disputes import dispute_resolve
from feedback.services.intake import feedback_submit
from feedback.services.projects import ROLE_GROUPS, membership_grant

from ..conftest import client_for

pytestmark = pytest.mark.django_db

RAW_KEY = re.compile(r"rdr_[A-Za-z0-9_-]{43}")  # "rdr_" + token_urlsafe(32)
PASSWORD = "pw-123456"
CHANGELIST = reverse("admin:feedback_feedback_changelist")


# --- helpers ---------------------------------------------------------------------------------


def submit(project: Project, *items: dict[str, Any]) -> list[Feedback]:
    results = feedback_submit(context=project_context(project=project), items=list(items))
    assert [r.outcome for r in results] == ["created"] * len(items), [r.errors for r in results]
    return [r.obj for r in results]


@pytest.fixture
def feedback_in(prediction_factory):
    """Create feedback on a fresh prediction of ``project``: feedback_in(project, kind=...)."""

    def _make(
        project: Project,
        kind: str = "report",
        *,
        categories: tuple[str, ...] = (),
        comment: str = "",
        model_version: str = "2026-11-01",
    ) -> Feedback:
        prediction = prediction_factory(project=project, model_version=model_version)
        item: dict[str, Any] = {
            "prediction": prediction.external_id,
            "kind": kind,
            "categories": list(categories),
            "comment": comment,
        }
        if kind == "rating":
            item["rating"] = -1
        (feedback,) = submit(project, item)
        return feedback

    return _make


def login_member(client, project: Project, role: str, username: str = "pat"):
    """A staff user with ``role`` in ``project``, logged in with a password."""
    membership = membership_grant(project=project, username=username, role=role, password=PASSWORD)
    assert client.login(username=username, password=PASSWORD)
    return membership.user


def form_data(response) -> dict[str, Any]:
    """The POST body a browser would send for an admin change page, as rendered."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data: dict[str, Any] = {}
    for form in forms:
        for bound in form:
            value = bound.value()
            if isinstance(value, bool):
                if value:
                    data[bound.html_name] = "on"
            elif value is not None:
                data[bound.html_name] = value
    return data


def listed_ids(response) -> list[int]:
    return [obj.pk for obj in response.context["cl"].result_list]


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def resolve_via_admin(client, ids: list[int], *, upheld: bool, note: str, url: str = CHANGELIST):
    """Both steps of the resolve action: the changelist POST, then the confirmation form."""
    action = "resolve_upheld" if upheld else "resolve_rejected"
    selected = [str(pk) for pk in ids]
    confirm = client.post(url, {"action": action, "_selected_action": selected, "index": "0"})
    assert confirm.status_code == 200
    assert confirm.templates[0].name == "admin/feedback/feedback/resolve_disputes.html"
    return client.post(
        url,
        {"action": action, "_selected_action": selected, "post": "yes", "note": note},
        follow=True,
    )


# --- API keys --------------------------------------------------------------------------------


def test_adding_a_key_shows_the_raw_key_once(admin_client, admin_user, project):
    # when
    response = admin_client.post(
        reverse("admin:feedback_apikey_add"),
        {"project": project.pk, "name": "support-bot prod", "scopes": ["ingest", "data"]},
        follow=True,
    )

    # then: the message carries the key, the database only its hash
    assert response.status_code == 200
    found = RAW_KEY.findall(response.content.decode())
    assert len(found) == 1
    raw = found[0]
    key = ApiKey.objects.get(name="support-bot prod")
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(key.prefix)
    assert key.scopes == ["data", "ingest"]
    assert key.created_by == admin_user
    assert client_for(raw).get("/api/v1/categories").status_code == 200

    # and never again: not on the change page, not on the list once the message was read
    change = admin_client.get(reverse("admin:feedback_apikey_change", args=[key.pk]))
    assert change.status_code == 200
    assert raw not in change.content.decode()
    assert key.prefix in change.content.decode()
    assert raw not in admin_client.get(reverse("admin:feedback_apikey_changelist")).content.decode()


def test_key_form_has_scope_checkboxes_and_no_way_to_edit_the_hash(
    admin_client, project, ingest_key, django_capture_on_commit_callbacks
):
    key = ApiKey.objects.get()
    add_page = admin_client.get(reverse("admin:feedback_apikey_add")).content.decode()
    assert 'type="checkbox" name="scopes" value="ingest"' in add_page
    assert 'type="checkbox" name="scopes" value="data"' in add_page

    url = reverse("admin:feedback_apikey_change", args=[key.pk])
    page = admin_client.get(url)
    assert 'name="key_hash"' not in page.content.decode()
    assert key.key_hash in page.content.decode()  # shown, read-only

    # when: a forged key_hash is posted along with a scope change
    data = {**form_data(page), "scopes": ["data"], "key_hash": "0" * 64, "name": "renamed"}
    assert client_for(ingest_key).get("/api/v1/categories").status_code == 200  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(url, data).status_code == 302

    # then
    key.refresh_from_db()
    assert key.key_hash == hashlib.sha256(ingest_key.encode()).hexdigest()
    assert (key.name, key.scopes) == ("renamed", ["data"])
    # the cached lookup was dropped: the key lost its ingest scope at once
    response = client_for(ingest_key).post(
        "/api/v1/predictions", {"external_id": "x", "output": {}}, format="json"
    )
    assert response.status_code == 403


def test_keys_cannot_be_deleted_only_revoked(admin_client, project, ingest_key):
    key = ApiKey.objects.get()
    response = admin_client.get(reverse("admin:feedback_apikey_delete", args=[key.pk]))
    assert response.status_code == 403


def test_revoke_action_revokes_and_the_key_gets_401_at_once(
    admin_client, project, make_key, django_capture_on_commit_callbacks
):
    raw = make_key(project, ["ingest"])
    other_raw = make_key(project, ["ingest"])
    key = ApiKey.objects.get(key_hash=hashlib.sha256(raw.encode()).hexdigest())
    assert client_for(raw).get("/api/v1/categories").status_code == 200  # lookup now cached

    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:feedback_apikey_changelist"),
            {"action": "revoke_keys", "_selected_action": [str(key.pk)], "index": "0"},
            follow=True,
        )

    # then
    assert "Revoked 1 key." in messages_of(response)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert client_for(raw).get("/api/v1/categories").status_code == 401
    assert client_for(other_raw).get("/api/v1/categories").status_code == 200

    # revoking again changes nothing and says so
    revoked_at = key.revoked_at
    again = admin_client.post(
        reverse("admin:feedback_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [str(key.pk)], "index": "0"},
        follow=True,
    )
    assert "1 key already revoked, left as they were." in messages_of(again)
    key.refresh_from_db()
    assert key.revoked_at == revoked_at


# --- resolving disputes ----------------------------------------------------------------------


def test_resolving_disputes_through_the_action(
    admin_client, admin_user, project, ingest_client, feedback_in
):
    # given two open disputes and a report
    first = feedback_in(project, "dispute", categories=("incorrect",), comment="Refund denied")
    second = feedback_in(project, "dispute", comment="Wrong plan quoted")
    report = feedback_in(project, "report", comment="slow")

    # when: the first step shows the confirmation page and changes nothing
    selected = [str(first.pk), str(second.pk), str(report.pk)]
    confirm = admin_client.post(
        CHANGELIST, {"action": "resolve_upheld", "_selected_action": selected, "index": "0"}
    )
    page = confirm.content.decode()
    assert '<textarea name="note"' in page
    assert "Resolve 2 disputes as" in page
    assert "Refund denied" in page
    assert f"#{report.pk} (report)" in page  # announced as skipped
    assert Feedback.objects.filter(status="open").count() == 2

    # and the second step, with the note, resolves them
    note = "The refund policy was misquoted; the user was right."
    response = admin_client.post(
        CHANGELIST,
        {"action": "resolve_upheld", "_selected_action": selected, "post": "yes", "note": note},
        follow=True,
    )

    # then
    assert messages_of(response) == [
        "Resolved 2 disputes as upheld.",
        f"Skipped 1 item (not disputes): #{report.pk}.",
    ]
    for dispute in (first, second):
        dispute.refresh_from_db()
        assert dispute.status == "upheld"
        assert dispute.resolution_note == note
        assert dispute.resolved_by == admin_user
        assert dispute.resolved_at is not None
        event = DisputeEvent.objects.get(feedback=dispute)
        assert (event.from_status, event.to_status, event.note, event.actor) == (
            "open",
            "upheld",
            note,
            admin_user,
        )
    report.refresh_from_db()
    assert report.status is None
    assert DisputeEvent.objects.count() == 2
    # the app sees the resolution
    body = ingest_client.get(f"/api/v1/disputes/{first.pk}").json()
    assert (body["status"], body["resolution_note"]) == ("upheld", note)

    # and the change page shows the history, read-only
    change = admin_client.get(reverse("admin:feedback_feedback_change", args=[first.pk]))
    html = change.content.decode()
    assert "Dispute events" in html
    assert note in html
    assert 'name="events-0-note"' not in html
    assert 'name="_save"' not in html


def test_a_disputes_page_has_resolve_buttons_calling_the_same_service(
    admin_client, admin_user, project, feedback_in
):
    dispute = feedback_in(project, "dispute", comment="Refund denied")
    report = feedback_in(project, "report", comment="slow")
    page = reverse("admin:feedback_feedback_change", args=[dispute.pk])
    resolve = reverse("admin:feedback_feedback_resolve", args=[dispute.pk])

    html = admin_client.get(page).content.decode()
    assert 'id="resolve-dispute"' in html and f'action="{resolve}"' in html
    assert 'name="upheld" value="1"' in html and 'name="upheld" value="0"' in html
    report_page = admin_client.get(reverse("admin:feedback_feedback_change", args=[report.pk]))
    assert 'id="resolve-dispute"' not in report_page.content.decode()

    # no note: refused, nothing changes
    response = admin_client.post(resolve, {"upheld": "1", "note": " "}, follow=True)
    assert messages_of(response) == ["Write a resolution note, then press Upheld or Rejected."]
    dispute.refresh_from_db()
    assert dispute.status == "open"

    response = admin_client.post(resolve, {"upheld": "0", "note": "Policy applied."}, follow=True)

    assert response.redirect_chain == [(page, 302)]
    assert messages_of(response) == [f"Resolved dispute {dispute.pk} as rejected."]
    dispute.refresh_from_db()
    assert (dispute.status, dispute.resolution_note, dispute.resolved_by) == (
        "rejected",
        "Policy applied.",
        admin_user,
    )
    assert DisputeEvent.objects.get(feedback=dispute).to_status == "rejected"
    assert 'id="resolve-dispute"' not in response.content.decode()  # resolved: final

    # a second resolution is the service's refusal, reported
    again = admin_client.post(resolve, {"upheld": "1", "note": "Changed my mind."}, follow=True)
    assert len(messages_of(again)) == 1 and "rejected" in messages_of(again)[0]
    dispute.refresh_from_db()
    assert dispute.status == "rejected"
    assert admin_client.get(resolve).status_code == 405


def test_triage_shows_ratings_and_one_line_comments(admin_client, project, feedback_in):
    long_comment = "The reply quoted the wrong plan.\nThen it " + "kept going " * 40
    feedback_in(project, "rating")
    feedback_in(project, "report", comment=long_comment)

    html = admin_client.get(CHANGELIST).content.decode()

    assert '<td class="field-rating_shown"><span class="triage-rating"' in html
    assert "\N{MINUS SIGN}1</span>" in html
    # the cell is one line with an ellipsis; the whole comment is its tooltip
    assert 'title="The reply quoted the wrong plan.\nThen it kept going' in html
    assert "white-space: nowrap" in html and "text-overflow: ellipsis" in html


def test_resolution_needs_a_note(admin_client, project, feedback_in):
    dispute = feedback_in(project, "dispute")

    response = admin_client.post(
        CHANGELIST,
        {
            "action": "resolve_rejected",
            "_selected_action": [str(dispute.pk)],
            "post": "yes",
            "note": "   ",
        },
    )

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    dispute.refresh_from_db()
    assert dispute.status == "open"
    assert not DisputeEvent.objects.exists()


def test_resolving_a_resolved_dispute_is_refused_and_reported(
    admin_client, admin_user, project, feedback_in
):
    done = feedback_in(project, "dispute")
    dispute_resolve(dispute_id=done.pk, upheld=False, note="Output was right.", actor=admin_user)
    still_open = feedback_in(project, "dispute")

    response = resolve_via_admin(
        admin_client, [done.pk, still_open.pk], upheld=True, note="Second look: user was right."
    )

    assert messages_of(response) == [
        "Resolved 1 dispute as upheld.",
        f"Refused 1: #{done.pk}: A dispute that is rejected cannot become upheld.",
    ]
    done.refresh_from_db()
    assert (done.status, done.resolution_note) == ("rejected", "Output was right.")
    assert DisputeEvent.objects.filter(feedback=done).count() == 1
    still_open.refresh_from_db()
    assert still_open.status == "upheld"


def test_a_selection_without_disputes_is_skipped_without_a_form(admin_client, project, feedback_in):
    rating = feedback_in(project, "rating")

    response = admin_client.post(
        CHANGELIST,
        {"action": "resolve_upheld", "_selected_action": [str(rating.pk)], "index": "0"},
        follow=True,
    )

    assert messages_of(response) == ["No disputes among the selected items; skipped 1 item."]


def test_a_dispute_that_left_the_filtered_list_is_reported(
    admin_client, admin_user, project, feedback_in
):
    # given: an admin works on the open disputes; someone resolves one meanwhile
    first, second = feedback_in(project, "dispute"), feedback_in(project, "dispute")
    url = f"{CHANGELIST}?status__exact=open"
    selected = [str(first.pk), str(second.pk)]
    admin_client.post(
        url, {"action": "resolve_rejected", "_selected_action": selected, "index": "0"}
    )
    dispute_resolve(dispute_id=first.pk, upheld=True, note="Done by a colleague.")

    response = admin_client.post(
        url,
        {"action": "resolve_rejected", "_selected_action": selected, "post": "yes", "note": "No."},
        follow=True,
    )

    assert messages_of(response) == [
        "Resolved 1 dispute as rejected.",
        f"1 selected item no longer in this list (changed, or not visible to you), "
        f"left alone: #{first.pk}.",
    ]


# --- project scoping -------------------------------------------------------------------------


def test_a_member_sees_only_their_projects(client, project, other_project, feedback_in, make_key):
    # given feedback, keys and a category in two projects; pat administers only the first
    mine = [feedback_in(project, "report", comment=f"mine {i}") for i in range(2)]
    theirs = [feedback_in(other_project, "dispute", comment=f"theirs {i}") for i in range(3)]
    make_key(project, ["ingest"])
    make_key(other_project, ["ingest"])
    FeedbackCategory.objects.create(project=other_project, slug="their-only", name="Theirs")
    login_member(client, project, Membership.Role.ADMIN)

    # then: the triage list holds only the first project's feedback
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert sorted(listed_ids(response)) == sorted(f.pk for f in mine)
    html = response.content.decode()
    assert "theirs" not in html
    assert "their-only" not in html  # the category filter offers only their own slugs
    assert other_project.slug not in html

    # another project's feedback does not exist for them
    hidden = client.get(reverse("admin:feedback_feedback_change", args=[theirs[0].pk]))
    assert hidden.status_code == 302
    assert hidden.url == reverse("admin:index")
    visible = client.get(reverse("admin:feedback_feedback_change", args=[mine[0].pk]))
    assert visible.status_code == 200

    # nor its keys, predictions or projects
    keys = client.get(reverse("admin:feedback_apikey_changelist"))
    assert [k.project_id for k in keys.context["cl"].result_list] == [project.pk]
    predictions = client.get(reverse("admin:feedback_prediction_changelist"))
    assert {p.project_id for p in predictions.context["cl"].result_list} == {project.pk}
    projects = client.get(reverse("admin:feedback_project_changelist"))
    assert listed_ids(projects) == [project.pk]
    assert (
        client.get(reverse("admin:feedback_project_change", args=[other_project.pk])).status_code
        == 302
    )
    # and a new key can only go to their own project
    add_form = client.get(reverse("admin:feedback_apikey_add"))
    choices = list(add_form.context["adminform"].form.fields["project"].queryset)
    assert choices == [project]


def test_a_reviewer_sees_no_feedback_unless_given_the_permission(client, project, feedback_in):
    feedback_in(project, "report", comment="hidden from reviewers")
    user = login_member(client, project, Membership.Role.REVIEWER)
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(reverse("admin:feedback_project_changelist")).status_code == 200

    # Django permissions are respected as they are: granting view_feedback shows it
    user.user_permissions.add(Permission.objects.get(codename="view_feedback"))
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert "hidden from reviewers" in response.content.decode()


def test_an_admin_elsewhere_cannot_act_where_they_only_review(
    client, project, other_project, feedback_in
):
    # given: pat administers other_project but only reviews in project
    dispute = feedback_in(project, "dispute", comment="in the reviewed project")
    own = feedback_in(other_project, "dispute")
    membership_grant(project=project, username="pat", role=Membership.Role.REVIEWER)
    login_member(client, other_project, Membership.Role.ADMIN)

    # when
    response = resolve_via_admin(client, [dispute.pk, own.pk], upheld=True, note="Mine to say.")

    # then
    assert messages_of(response) == [
        "Resolved 1 dispute as upheld.",
        f"Refused 1: #{dispute.pk}: you may not resolve disputes of {project.slug}",
    ]
    dispute.refresh_from_db()
    assert dispute.status == "open"
    # and keys can only be minted in the administered project
    add_form = client.get(reverse("admin:feedback_apikey_add"))
    assert list(add_form.context["adminform"].form.fields["project"].queryset) == [other_project]
    refused = client.post(
        reverse("admin:feedback_apikey_add"),
        {"project": project.pk, "name": "sneaky", "scopes": ["data"]},
    )
    assert refused.status_code == 200  # the form comes back with an error
    assert not ApiKey.objects.filter(name="sneaky").exists()


# --- triage list: filters, search, query count -----------------------------------------------


def test_triage_filters(admin_client, project, feedback_in):
    rating = feedback_in(project, "rating")
    unsafe = feedback_in(project, "report", categories=("unsafe",), model_version="v2")
    dispute = feedback_in(project, "dispute", categories=("incorrect", "unsafe"))
    resolved = feedback_in(project, "dispute", categories=("incorrect",))
    dispute_resolve(dispute_id=resolved.pk, upheld=False, note="Fine as it was.")
    Feedback.objects.filter(pk=rating.pk).update(created_at=timezone.now() - timedelta(days=30))

    def ids(query: str) -> set[int]:
        response = admin_client.get(f"{CHANGELIST}?{query}")
        assert response.status_code == 200  # an unknown filter would redirect to ?e=1
        return set(listed_ids(response))

    assert ids("") == {rating.pk, unsafe.pk, dispute.pk, resolved.pk}
    assert ids("kind__exact=dispute") == {dispute.pk, resolved.pk}
    assert ids("kind__exact=rating") == {rating.pk}
    assert ids("status__exact=open") == {dispute.pk}
    assert ids("status__exact=rejected") == {resolved.pk}
    assert ids("category=unsafe") == {unsafe.pk, dispute.pk}
    assert ids("category=incorrect&status__exact=open") == {dispute.pk}
    assert ids("prediction__model_version=v2") == {unsafe.pk}
    week_ago = urlencode({"created_at__gte": str(timezone.now() - timedelta(days=7))})
    assert ids(week_ago) == {unsafe.pk, dispute.pk, resolved.pk}

    # the list shows the columns triage needs
    html = admin_client.get(CHANGELIST).content.decode()
    assert "incorrect, unsafe" in html
    assert dispute.prediction.external_id in html


def test_search_in_comments_and_external_ids(admin_client, project, feedback_in):
    refund = feedback_in(project, "report", comment="It refused my refund twice")
    other = feedback_in(project, "report", comment="Answer was too long")

    response = admin_client.get(f"{CHANGELIST}?q=refund")
    assert listed_ids(response) == [refund.pk]
    response = admin_client.get(f"{CHANGELIST}?q={other.prediction.external_id}")
    assert listed_ids(response) == [other.pk]


def test_triage_list_query_count_does_not_grow_with_rows(admin_client, project, feedback_in):
    def make(n: int) -> None:
        for i in range(n):
            kind = ("dispute", "report", "rating")[i % 3]
            feedback_in(project, kind, categories=("incorrect", "unsafe"), comment=f"c{i}")

    def count_queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(CHANGELIST)
        assert response.status_code == 200
        return len(queries), len(response.context["cl"].result_list)

    make(5)
    admin_client.get(CHANGELIST)  # warm the session and content types
    few, rows = count_queries()
    assert rows == 5
    make(25)
    many, rows = count_queries()
    assert rows == 30
    assert many == few


def test_triage_list_query_count_for_a_member(client, project, feedback_in):
    login_member(client, project, Membership.Role.ADMIN)
    for i in range(30):
        feedback_in(project, "dispute", categories=("incorrect",), comment=f"c{i}")
    client.get(CHANGELIST)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST)
    assert len(response.context["cl"].result_list) == 30
    assert len(queries) <= 15, [q["sql"] for q in queries]


# --- taxonomy and project edits reach cached key lookups -------------------------------------


def post_feedback(raw_key: str, prediction: str, **fields: Any):
    return client_for(raw_key).post(
        "/api/v1/feedback", {"prediction": prediction, "kind": "report", **fields}, format="json"
    )


def test_category_edit_in_the_admin_applies_to_keys_at_once(
    admin_client, project, ingest_key, prediction_factory, django_capture_on_commit_callbacks
):
    prediction_factory(project=project, external_id="p1")
    category = FeedbackCategory.objects.get(project=project, slug="too_slow")
    api = client_for(ingest_key)
    assert "too_slow" in [c["slug"] for c in api.get("/api/v1/categories").json()]
    assert post_feedback(ingest_key, "p1", categories=["too_slow"]).status_code == 201

    # given the lookup is cached: a raw database edit is not seen by intake (this is what the
    # admin must not leave behind)
    FeedbackCategory.objects.filter(pk=category.pk).update(active=False)
    assert post_feedback(ingest_key, "p1", categories=["too_slow"]).status_code == 201
    FeedbackCategory.objects.filter(pk=category.pk).update(active=True)

    # when: the category is deactivated and renamed through the admin
    url = reverse("admin:feedback_feedbackcategory_change", args=[category.pk])
    data = form_data(admin_client.get(url))
    data.pop("active")
    data["name"] = "Far too slow"
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(url, data).status_code == 302

    # then
    assert "too_slow" not in [c["slug"] for c in api.get("/api/v1/categories").json()]
    refused = post_feedback(ingest_key, "p1", categories=["too_slow"])
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["code"] == "unknown_category"

    # and a category added through the admin is accepted at once
    with django_capture_on_commit_callbacks(execute=True):
        added = admin_client.post(
            reverse("admin:feedback_feedbackcategory_add"),
            {
                "project": project.pk,
                "slug": "hallucination",
                "name": "Hallucination",
                "description": "",
                "active": "on",
                "position": "9",
            },
        )
    assert added.status_code == 302
    assert "hallucination" in [c["slug"] for c in api.get("/api/v1/categories").json()]
    assert post_feedback(ingest_key, "p1", categories=["hallucination"]).status_code == 201


def test_a_category_slug_cannot_be_renamed(admin_client, project):
    category = FeedbackCategory.objects.get(project=project, slug="other")
    url = reverse("admin:feedback_feedbackcategory_change", args=[category.pk])
    data = {**form_data(admin_client.get(url)), "slug": "renamed"}
    assert admin_client.post(url, data).status_code == 302
    category.refresh_from_db()
    assert category.slug == "other"


def test_project_edit_with_inline_taxonomy_applies_to_keys_at_once(
    admin_client, project, ingest_key, prediction_factory, django_capture_on_commit_callbacks
):
    prediction_factory(project=project, external_id="p1")
    stored = post_feedback(ingest_key, "p1", comment="write to ann@example.com")
    assert stored.json()["comment"] == "write to [EMAIL]"  # and the lookup is now cached

    # when: PII scrubbing is switched off on the project page
    url = reverse("admin:feedback_project_change", args=[project.pk])
    data = form_data(admin_client.get(url))
    data.pop("scrub_pii")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors

    # then
    raw = post_feedback(ingest_key, "p1", comment="write to ann@example.com")
    assert raw.json()["comment"] == "write to ann@example.com"

    # when: a category is deactivated in the inline taxonomy
    assert post_feedback(ingest_key, "p1", categories=["off_topic"]).status_code == 201
    page = admin_client.get(url)
    data = form_data(page)
    (index,) = [
        i
        for i, form in enumerate(page.context["inline_admin_formsets"][0].formset.forms)
        if form.instance.slug == "off_topic"
    ]
    data.pop(f"categories-{index}-active")
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(url, data).status_code == 302

    # then
    assert not FeedbackCategory.objects.get(project=project, slug="off_topic").active
    assert post_feedback(ingest_key, "p1", categories=["off_topic"]).status_code == 400


def test_adding_a_project_in_the_admin_brings_the_default_taxonomy(admin_client):
    response = admin_client.post(
        reverse("admin:feedback_project_add"),
        {"slug": "loan-screener", "name": "Loan screener", "description": ""},
    )
    assert response.status_code == 302
    project = Project.objects.get(slug="loan-screener")
    assert project.categories.count() == 7


def test_nothing_that_holds_submissions_can_be_deleted_in_the_admin(
    admin_client, project, feedback_in
):
    feedback = feedback_in(project, "dispute")
    category = FeedbackCategory.objects.filter(project=project).first()
    for url in (
        reverse("admin:feedback_project_delete", args=[project.pk]),
        reverse("admin:feedback_feedback_delete", args=[feedback.pk]),
        reverse("admin:feedback_prediction_delete", args=[feedback.prediction_id]),
        reverse("admin:feedback_feedbackcategory_delete", args=[category.pk]),
    ):
        assert admin_client.get(url).status_code == 403, url
    assert Feedback.objects.filter(pk=feedback.pk).exists()


def test_adding_a_member_in_the_admin_grants_the_role(admin_client, project, user_factory):
    person = user_factory(username="dana")

    response = admin_client.post(
        reverse("admin:feedback_membership_add"),
        {"project": project.pk, "user": person.pk, "role": Membership.Role.DATA_SCIENTIST},
    )

    assert response.status_code == 302
    person.refresh_from_db()
    assert person.is_staff
    assert list(person.groups.values_list("name", flat=True)) == [
        ROLE_GROUPS[Membership.Role.DATA_SCIENTIST]
    ]
    assert person.has_perm("feedback.view_feedback")


def test_changing_a_role_on_the_project_page_goes_through_the_grant(admin_client, project):
    membership = membership_grant(project=project, username="sam", role=Membership.Role.REVIEWER)
    url = reverse("admin:feedback_project_change", args=[project.pk])
    page = admin_client.get(url)
    data = form_data(page)
    (index,) = [
        i
        for i, form in enumerate(page.context["inline_admin_formsets"][1].formset.forms)
        if form.instance.pk == membership.pk
    ]

    data[f"memberships-{index}-role"] = Membership.Role.ADMIN
    assert admin_client.post(url, data).status_code == 302

    membership.refresh_from_db()
    assert membership.role == Membership.Role.ADMIN
    assert membership.user.groups.filter(name=ROLE_GROUPS[Membership.Role.ADMIN]).exists()
    assert membership.user.has_perm("feedback.change_feedback")
