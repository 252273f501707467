"""Queues: creation and configuration, and who may review in them.

``queue_create`` and ``queue_update`` take a configuration checked by
``labeling.payloads.queues.queue_input`` (the API's, the admin form's, the demo's) and check
what needs the database or the stored queue: a name taken, reviewers who are members, a gold
set of the project, the sampling policy as a whole.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from feedback.errors import FieldError, InvalidInput
from feedback.models import Membership, Project

from ..models import GoldSet, Queue
from .sampling import POLICY_FIELDS, validate_policy

CONFIG_FIELDS = (
    "name",
    "instructions",
    "label_choices",
    "overlap",
    "lease_seconds",
    "show_segments",
    "consensus",
    "active",
    "gold_set",
    "gold_rate",
    "notify_every",
)
# Hidden gold checks (labeling/services/claims.py): the share of served items that are checks is
# at most one half, so most of a reviewer's work is always production work.
GOLD_FIELDS = ("gold_set", "gold_rate")
POLICY_DEFAULTS = {
    "source": Queue.Source.PREDICTIONS,
    "filter": {},
    "strategy": Queue.Strategy.ALL,
    "size": None,
    "rate": None,
    "strata": [],
    "allocation": Queue.Allocation.PROPORTIONAL,
    "min_per_stratum": 0,
    "seed": None,
    "schedule_minutes": None,
}


def _reviewers(project: Project, usernames: list[str]) -> list[AbstractBaseUser]:
    users = {
        user.get_username(): user
        for user in get_user_model().objects.filter(
            username__in=usernames, memberships__project=project
        )
    }
    missing = [
        FieldError(
            f"reviewers[{position}]",
            "not_a_member",
            f"{name!r} is not a member of {project.slug}; add them with create_reviewer.",
        )
        for position, name in enumerate(usernames)
        if name not in users
    ]
    if missing:
        raise InvalidInput(missing)
    return list(users.values())


def _gold_set(project: Project, value: Any) -> GoldSet | None:
    """The gold set named by a slug (the API) or given as an object (the admin form), which must
    belong to the queue's project; None turns gold checks off."""
    if value is None or value == "":
        return None
    if isinstance(value, GoldSet):
        if value.project_id != project.pk:
            raise InvalidInput.one(
                "gold_set", "other_project", f"Gold set {value.slug!r} is not of {project.slug}."
            )
        return value
    found = (
        GoldSet.objects.filter(project=project, slug=value).first()
        if isinstance(value, str)
        else None
    )
    if found is None:
        valid = ", ".join(GoldSet.objects.filter(project=project).values_list("slug", flat=True))
        raise InvalidInput.one(
            "gold_set",
            "not_found",
            f"{value!r} is not a gold set of {project.slug}; valid: {valid or 'none yet'}.",
        )
    return found


def _apply(queue: Queue, data: dict[str, Any]) -> None:
    for name in CONFIG_FIELDS:
        if name in data and name not in GOLD_FIELDS:
            setattr(queue, name, data[name])
    if "gold_set" in data:
        queue.gold_set = _gold_set(queue.project, data["gold_set"])
    if "gold_rate" in data:
        queue.gold_rate = float(data["gold_rate"])
    sampling = data.get("sampling") or {}
    for name in (*POLICY_FIELDS, "seed", "schedule_minutes"):
        if name in sampling:
            setattr(queue, name, sampling[name])
    policy = {name: getattr(queue, name) for name in POLICY_FIELDS}
    validate_policy(policy)  # the policy as a whole: the fields sent with the stored others


@transaction.atomic
def queue_create(*, project: Project, data: dict[str, Any]) -> Queue:
    if Queue.objects.filter(project=project, name=data["name"]).exists():
        raise InvalidInput.one("name", "exists", f"{project.slug} has a queue {data['name']!r}.")
    queue = Queue(project=project, **{k: v for k, v in POLICY_DEFAULTS.items() if k != "filter"})
    _apply(queue, data)
    queue.save()
    if "reviewers" in data:
        queue.reviewers.set(_reviewers(project, data["reviewers"]))
    return queue


@transaction.atomic
def queue_update(*, queue: Queue, data: dict[str, Any]) -> Queue:
    if (
        "name" in data
        and Queue.objects.filter(project=queue.project, name=data["name"])
        .exclude(pk=queue.pk)
        .exists()
    ):
        raise InvalidInput.one("name", "exists", f"Another queue is named {data['name']!r}.")
    _apply(queue, data)
    queue.save()
    if "reviewers" in data:
        queue.reviewers.set(_reviewers(queue.project, data["reviewers"]))
    return queue


def queue_reviewers_add(*, project: Project, queue_ids: list[int], user: AbstractBaseUser) -> None:
    """Assign a person to queues of a project (they must be a member of it)."""
    queues = list(Queue.objects.filter(project=project, pk__in=queue_ids))
    missing = sorted(set(queue_ids) - {q.pk for q in queues})
    if missing:
        raise InvalidInput.one("queue", "not_found", f"No queue {missing} in {project.slug}.")
    if not Membership.objects.filter(project=project, user=user).exists():
        raise InvalidInput.one("reviewer", "not_a_member", f"Not a member of {project.slug}.")
    for queue in queues:
        queue.reviewers.add(user)
