"""The reviewer workspace: "label next item" inside the Django admin.

Thin views over ``labeling.services`` and ``labeling.selectors``: the page claims with
``queue_claim_next``, the form submits with ``item_label_submit`` and skips with
``item_release``; every rule (leases, one label per reviewer, valid categories and labels)
lives there. The pages work as plain HTML forms; ``labeling/static/labeling/workspace.js`` only
adds keyboard shortcuts (``?`` lists them), the predicted label prefilled on "correct", and
a lease countdown. A reviewer's own labels can be changed (``label_edit_own``, which keeps the
old answer as a revision): "undo" reopens the last one, "My recent labels" lists the rest.

Mounting: ``QueueAdmin.get_urls`` (``queues.py`` beside this module) includes
``workspace_urls()`` inside the admin site, so the patterns live in the ``admin`` namespace
and are reversed as ``admin:labeling_workspace_index``, ``admin:labeling_workspace`` (``queue_id``),
``admin:labeling_workspace_submit``, ``admin:labeling_workspace_release``,
``admin:labeling_workspace_undo``, ``admin:labeling_workspace_recent`` (``queue_id``) and
``admin:labeling_workspace_edit`` (``queue_id``, ``label_id``).
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from feedback.errors import ServiceError
from feedback.selectors import category_list

from ..models import Assignment, Label, Queue, QueueItem
from ..payloads.labels import CONFIRM_FIELD, label_input
from ..selectors import can_review, claim_payload, queues_for_reviewer
from ..selectors.reviewing import last_label, recent_labels, reviewer_progress
from ..services.claims import item_release, queue_claim_next
from ..services.labels import CONTRADICTION_CODE, item_label_submit, label_edit_own

TEMPLATES = "admin/labeling/workspace"
# Keys of an input/output object that plainly hold the text a person reads.
TEXT_KEYS = ("message", "reply", "text", "content", "prompt", "question", "answer", "response")
# Keys the page itself uses: digits pick the verdict, "s" skips, "z" undoes the last label.
RESERVED_KEYS = set("sz0123456789")
STARTED_SALT = "labeling.workspace.started"
# Form fields that show their own errors; any other error is listed at the top of the form.
SHOWN_FIELDS = {"verdict", "categories", "true_label", "correction", "notes", CONFIRM_FIELD}


def workspace_urls() -> list[URLPattern]:
    """The workspace's URL patterns, each behind the admin's login and staff check.

    Include them inside the admin site (``ModelAdmin.get_urls``) so they share its namespace.
    """
    view = admin.site.admin_view
    return [
        path("", view(workspace_index), name="labeling_workspace_index"),
        path("<int:queue_id>/", view(workspace_label), name="labeling_workspace"),
        path("<int:queue_id>/submit/", view(workspace_submit), name="labeling_workspace_submit"),
        path("<int:queue_id>/release/", view(workspace_release), name="labeling_workspace_release"),
        path("<int:queue_id>/undo/", view(workspace_undo), name="labeling_workspace_undo"),
        path("<int:queue_id>/mine/", view(workspace_recent), name="labeling_workspace_recent"),
        path(
            "<int:queue_id>/labels/<int:label_id>/",
            view(workspace_edit),
            name="labeling_workspace_edit",
        ),
    ]


# --- views -----------------------------------------------------------------------------------


@require_GET
def workspace_index(request: HttpRequest) -> HttpResponse:
    """The person's queues with their open items, and their own figures."""
    queues = list(queues_for_reviewer(user=request.user))
    mine = dict(
        Label.objects.filter(reviewer=request.user, item__queue__in=[q.pk for q in queues])
        .order_by()
        .values_list("item__queue")
        .annotate(n=Count("id"))
        .values_list("item__queue", "n")
    )
    for queue in queues:
        queue.my_labels = mine.get(queue.pk, 0)
    context = {
        **admin.site.each_context(request),
        "title": "Label next item",
        "queues": queues,
        "stats": reviewer_stats(user=request.user),
    }
    return TemplateResponse(request, f"{TEMPLATES}/index.html", context)


@require_GET
def workspace_label(request: HttpRequest, queue_id: int) -> HttpResponse:
    """Claim the next item of the queue (or get the held one back) and show the labeling form."""
    queue = _reviewable_queue(request, queue_id)
    if not queue.active:
        return _nothing_left(request, queue, paused=True)
    lease = queue_claim_next(queue=queue, reviewer=request.user)
    if lease is None:
        return _nothing_left(request, queue)
    return _render_item(request, queue, lease)


@require_POST
def workspace_submit(request: HttpRequest, queue_id: int) -> HttpResponse:
    """Store the label, then redirect to the page that claims the next item (POST/redirect/GET).

    Invalid input re-renders the same item with the errors beside the fields; a refusal that
    re-rendering cannot fix (the lease lapsed, already labeled) becomes a message.
    """
    queue = _reviewable_queue(request, queue_id)
    item = _posted_item(request, queue)
    try:
        label = item_label_submit(
            item_id=item.pk, reviewer=request.user, answer=label_input(_label_data(request, item))
        )
    except ServiceError as exc:
        if exc.status_code != 400:
            messages.warning(request, " ".join(e.detail for e in exc.errors))
            return _to_queue(queue)
        lease = _held_lease(item=item, reviewer=request.user)
        if lease is None:
            messages.warning(request, "Your lease on that item lapsed; here is the next one.")
            return _to_queue(queue)
        return _render_item(request, queue, lease, errors=exc.errors, posted=request.POST)
    messages.success(request, f"Saved item {item.pk}: {_summary(label)}. Z undoes it.")
    return _to_queue(queue)


@require_POST
def workspace_release(request: HttpRequest, queue_id: int) -> HttpResponse:
    """Give the item back and move on: a skipped item is not served again for a while."""
    queue = _reviewable_queue(request, queue_id)
    item = _posted_item(request, queue)
    try:
        item_release(item=item, reviewer=request.user)
    except ServiceError as exc:
        messages.warning(request, " ".join(e.detail for e in exc.errors))
    else:
        messages.info(request, f"Skipped item {item.pk}.")
    return _to_queue(queue)


@require_GET
def workspace_undo(request: HttpRequest, queue_id: int) -> HttpResponse:
    """Reopen the label submitted last in this queue, to change it (the edit keeps history)."""
    queue = _reviewable_queue(request, queue_id)
    label = last_label(queue=queue, user=request.user)
    if label is None:
        messages.info(request, "You have no label in this queue to undo.")
        return _to_queue(queue)
    return HttpResponseRedirect(reverse("admin:labeling_workspace_edit", args=[queue.pk, label.pk]))


@require_GET
def workspace_recent(request: HttpRequest, queue_id: int) -> HttpResponse:
    """The reviewer's latest labels in the queue, each with a link to change it."""
    queue = _reviewable_queue(request, queue_id)
    context = {
        **admin.site.each_context(request),
        "title": f"My recent labels in {queue.name}",
        "queue": queue,
        "labels": list(recent_labels(queue=queue, user=request.user)),
        "progress": reviewer_progress(queue=queue, user=request.user),
        "is_nav_sidebar_enabled": False,
    }
    return TemplateResponse(request, f"{TEMPLATES}/recent.html", context)


def workspace_edit(request: HttpRequest, queue_id: int, label_id: int) -> HttpResponse:
    """Change one of your own labels: GET shows it filled in, POST saves it (``label_edit_own``).

    The item on screen before (and its lease) is untouched: saving returns to the queue, which
    serves the held item again.
    """
    if request.method not in ("GET", "POST"):
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    queue = _reviewable_queue(request, queue_id)
    label = (
        Label.objects.select_related("item")
        .filter(pk=label_id, reviewer=request.user, item__queue=queue)
        .first()
    )
    if label is None:
        raise Http404(f"No label {label_id} of yours in this queue.")
    if request.method == "GET":
        return _render_item(request, queue, None, label=label)
    data = _label_data(request, label.item)
    data["seconds_spent"] = label.seconds_spent  # time spent is the first answer's
    try:
        label = label_edit_own(label_id=label.pk, reviewer=request.user, answer=label_input(data))
    except ServiceError as exc:
        if exc.status_code != 400:
            messages.warning(request, " ".join(e.detail for e in exc.errors))
            return _to_queue(queue)
        return _render_item(
            request, queue, None, label=label, errors=exc.errors, posted=request.POST
        )
    messages.success(request, f"Changed your label on item {label.item_id}: {_summary(label)}.")
    return _to_queue(queue)


# --- reads -----------------------------------------------------------------------------------


def reviewer_stats(*, user: AbstractBaseUser) -> dict[str, Any]:
    """A reviewer's own figures: labels done (all time, last 24 hours), median seconds.

    Every answer counts here, hidden gold checks included, and no gold accuracy is shown: a
    count that stood still, or an accuracy that moved, after one answer would tell the reviewer
    that item was a check. Gold accuracy is for the project's admins (queue dashboard, stats).
    """
    # One row per label of one person: a few thousand floats at most, cheap to read.
    rows = list(Label.objects.filter(reviewer=user).values_list("seconds_spent", "created_at"))
    since = timezone.now() - timedelta(days=1)
    seconds = [s for s, _ in rows if s is not None]
    return {
        "labels": len(rows),
        "last_day": sum(1 for _, created in rows if created >= since),
        "median_seconds": statistics.median(seconds) if seconds else None,
    }


def shortcut_letters(slugs: list[str], *, taken: set[str] | None = None) -> dict[str, str]:
    """A shortcut letter per category: the first free letter of its slug, else of a-z.

    Deterministic for a given taxonomy order; never a digit (verdicts), "s" (skip), "z"
    (undo), nor one of ``taken`` (the categories' letters, when lettering label choices).
    """
    used: set[str] = set(RESERVED_KEYS) | (taken or set())
    letters: dict[str, str] = {}
    for slug in slugs:
        for char in [*slug.lower(), *"abcdefghijklmnopqrtuvwxyz"]:
            if char.isascii() and char.isalpha() and char not in used:
                letters[slug] = char
                used.add(char)
                break
    return letters


def present(value: Any) -> dict[str, Any]:
    """How to show a JSON value to a person: text as text, anything else pretty-printed.

    An object whose only text is one obvious field ("message", "reply", ...) shows that text,
    with the raw JSON folded away below it.
    """
    if value is None or value == "":
        return {"empty": True}
    if isinstance(value, str):
        return {"text": value}
    # Sorted keys: PostgreSQL's jsonb does not keep the app's order, so show one order on both.
    pretty = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if isinstance(value, dict):
        texts = [k for k in TEXT_KEYS if isinstance(value.get(k), str) and value[k].strip()]
        if len(texts) == 1:
            return {"text": value[texts[0]], "field": texts[0], "raw": pretty}
    return {"json": pretty}


# --- internals -------------------------------------------------------------------------------


def _reviewable_queue(request: HttpRequest, queue_id: int) -> Queue:
    queue = get_object_or_404(Queue.objects.select_related("project"), pk=queue_id)
    if not can_review(queue=queue, user=request.user):
        raise PermissionDenied("You are not a reviewer of this queue.")
    return queue


def _posted_item(request: HttpRequest, queue: Queue) -> QueueItem:
    try:
        item_id = int(request.POST.get("item", ""))
    except ValueError:
        raise Http404("No item given.") from None
    item = QueueItem.objects.select_related("queue").filter(pk=item_id, queue=queue).first()
    if item is None:
        raise Http404(f"No item {item_id} in this queue.")
    return item


def _held_lease(*, item: QueueItem, reviewer: AbstractBaseUser) -> Assignment | None:
    return Assignment.objects.filter(
        item=item,
        reviewer=reviewer,
        status=Assignment.Status.ACTIVE,
        expires_at__gt=timezone.now(),
    ).first()


def _label_data(request: HttpRequest, item: QueueItem) -> dict[str, Any]:
    """The form, as the API's label payload (``label_input`` checks it: what is missing is its
    to refuse)."""
    post = request.POST
    verdict = post.get("verdict")
    data: dict[str, Any] = {
        "verdict": verdict,
        "categories": post.getlist("categories"),
        "correction": _text(post.get("correction")) or None,
        "notes": _text(post.get("notes")),
        "seconds_spent": _seconds_spent(post.get("started", ""), item_id=item.pk),
    }
    choices = item.queue.label_choices or []
    if choices or post.get("true_label"):
        data["true_label"] = post.get("true_label") or None
        if data["true_label"] is None and verdict == Label.Verdict.CORRECT:
            # "Correct" means the predicted label is the true one: what the page prefills.
            predicted = _shown_prediction(item).get("label")
            if predicted in choices:
                data["true_label"] = predicted
    if post.get(CONFIRM_FIELD):
        data[CONFIRM_FIELD] = True
    return data


def _shown_prediction(item: QueueItem) -> dict[str, Any]:
    item = QueueItem.objects.select_related("queue", "prediction", "gold_item").get(pk=item.pk)
    return claim_payload(item=item, lease_expires_at=None)["prediction"]


def _summary(label: Label) -> str:
    summary = label.get_verdict_display().lower()
    if label.true_label:
        summary += f" · {label.true_label}"
    if label.categories:
        summary += f" · {', '.join(label.categories)}"
    return summary


def _text(value: str | None) -> str:
    """A text box's value as stored: browsers send CRLF line ends; store plain LF."""
    return (value or "").replace("\r\n", "\n").strip()


def _seconds_spent(token: str, *, item_id: int) -> float | None:
    """Seconds since the page was served, from a signed stamp (so the figure is the server's)."""
    try:
        started = signing.loads(token, salt=STARTED_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(started, dict) or started.get("item") != item_id:
        return None
    seconds = time.time() - float(started.get("t", 0))
    return round(seconds, 3) if 0 <= seconds < 86400 else None


def _to_queue(queue: Queue) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:labeling_workspace", args=[queue.pk]))


def _nothing_left(request: HttpRequest, queue: Queue, *, paused: bool = False) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": f"Nothing left to label in {queue.name}",
        "queue": queue,
        "paused": paused,
        "is_nav_sidebar_enabled": False,
    }
    return TemplateResponse(request, f"{TEMPLATES}/done.html", context)


def _render_item(
    request: HttpRequest,
    queue: Queue,
    lease: Assignment | None,
    *,
    label: Label | None = None,
    errors: list | None = None,
    posted: Any = None,
) -> HttpResponse:
    """The labeling form for a leased item, or (``label`` given, no lease) the form that
    changes that label, filled in with what it says now."""
    # A hidden gold check renders from the same payload as any item (claim_payload makes them
    # indistinguishable), so the page cannot tell them apart either.
    item = QueueItem.objects.select_related("queue__project", "prediction", "gold_item").get(
        pk=lease.item_id if lease is not None else label.item_id
    )
    payload = claim_payload(item=item, lease_expires_at=lease.expires_at if lease else None)
    prediction = payload["prediction"]
    categories = list(category_list(project_id=queue.project_id))
    names = {c.slug: c.name for c in categories}
    letters = shortcut_letters([c.slug for c in categories])
    choices = payload["label_choices"] or []
    choice_letters = shortcut_letters(choices, taken=set(letters.values()))
    if posted is not None:
        shown = {
            "verdict": posted.get("verdict", ""),
            "categories": set(posted.getlist("categories")),
            "true_label": posted.get("true_label", ""),
            "correction": posted.get("correction", ""),
            "notes": posted.get("notes", ""),
        }
    elif label is not None:
        correction = label.correction
        shown = {
            "verdict": label.verdict,
            "categories": set(label.categories),
            "true_label": label.true_label,
            "correction": correction
            if isinstance(correction, str) or correction is None
            else json.dumps(correction, ensure_ascii=False),
            "notes": label.notes,
        }
    else:
        shown = {
            "verdict": "",
            "categories": set(),
            "true_label": "",
            "correction": "",
            "notes": "",
        }
    field_errors: dict[str, list[str]] = {}
    contradiction = False
    for error in errors or []:
        field = (error.field or "").split("[", 1)[0] or "__all__"
        field_errors.setdefault(field, []).append(error.detail)
        contradiction = contradiction or error.code == CONTRADICTION_CODE
    now = timezone.now()
    predicted = prediction.get("label")
    context = {
        **admin.site.each_context(request),
        "title": queue.name,
        "subtitle": f"Item {item.pk}",
        # The workspace wants the whole width; the app list is one click away (breadcrumbs).
        "is_nav_sidebar_enabled": False,
        "queue": queue,
        "item": item,
        "lease": lease,
        "editing": label,
        "form_action": reverse("admin:labeling_workspace_edit", args=[queue.pk, label.pk])
        if label is not None
        else reverse("admin:labeling_workspace_submit", args=[queue.pk]),
        "progress": reviewer_progress(queue=queue, user=request.user),
        "seconds_left": max(0, int((lease.expires_at - now).total_seconds())) if lease else 0,
        "started": signing.dumps({"item": item.pk, "t": time.time()}, salt=STARTED_SALT),
        "instructions": payload["instructions"],
        "prediction": prediction,
        "input": present(prediction["input"]),
        "output": present(prediction["output"]),
        "segment": prediction.get("segment"),  # present only when the queue shows segments
        "feedback": [
            {
                **f,
                "category_names": [names.get(slug, slug) for slug in f["categories"]],
                "correction_shown": present(f["correction"]),
            }
            for f in payload["feedback"]
        ],
        "verdicts": [
            {"value": value, "label": label, "key": str(n)}
            for n, (value, label) in enumerate(Label.Verdict.choices, start=1)
        ],
        "categories": [
            {
                "slug": c.slug,
                "name": c.name,
                "description": c.description,
                "key": letters.get(c.slug, ""),
                "checked": c.slug in shown["categories"],
            }
            for c in categories
        ],
        "label_choices": [
            {
                "value": choice,
                "key": choice_letters.get(choice, ""),
                "predicted": choice == predicted,
                "checked": choice == shown["true_label"],
            }
            for choice in choices
        ],
        "predicted_choice": predicted if predicted in choices else "",
        "contradiction": contradiction,
        "errors": errors or [],
        "field_errors": field_errors,
        "general_errors": [
            message
            for field, found in field_errors.items()
            if field not in SHOWN_FIELDS
            for message in found
        ],
        "posted": shown,
    }
    return TemplateResponse(request, f"{TEMPLATES}/item.html", context)
