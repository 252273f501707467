"""Projects, their default taxonomy and their members."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import transaction
from django.db.models import Q

from ..errors import Conflict, InvalidInput, NotFound
from ..models import FeedbackCategory, Membership, Project
from .keys import project_cache_invalidate

logger = logging.getLogger(__name__)

DEFAULT_CATEGORIES: list[tuple[str, str, str]] = [
    ("incorrect", "Incorrect", "The output is factually or logically wrong."),
    ("incomplete", "Incomplete", "The output misses part of what was asked."),
    ("unsafe", "Unsafe", "The output is harmful, dangerous or breaks a policy."),
    ("biased", "Biased", "The output treats a person or group unfairly."),
    ("off_topic", "Off topic", "The output does not address the request."),
    ("too_slow", "Too slow", "The answer took too long to be useful."),
    ("other", "Other", "Something else; see the comment."),
]

ROLE_GROUPS = {
    Membership.Role.REVIEWER: "Reviewers",
    Membership.Role.DATA_SCIENTIST: "Data scientists",
    Membership.Role.ADMIN: "Project admins",
}
# Django permissions each role's group carries in the admin ("app_label.codename"). What a
# person sees is further limited to the projects they are members of.
ROLE_PERMISSIONS = {
    Membership.Role.REVIEWER: ["feedback.view_project"],
    Membership.Role.DATA_SCIENTIST: [
        "feedback.view_project",
        "feedback.view_prediction",
        "feedback.view_feedback",
        "feedback.view_feedbackcategory",
        # labeling's models, named as strings: feedback never imports labeling
        "labeling.view_queue",
        "labeling.view_samplingrun",
        "labeling.view_queueitem",
    ],
    Membership.Role.ADMIN: [
        "feedback.view_project",
        "feedback.change_project",
        "feedback.view_apikey",
        "feedback.add_apikey",
        "feedback.change_apikey",
        "feedback.view_feedbackcategory",
        "feedback.add_feedbackcategory",
        "feedback.change_feedbackcategory",
        "feedback.view_prediction",
        "feedback.view_feedback",
        "feedback.change_feedback",
        "feedback.view_membership",
        "feedback.add_membership",
        "feedback.change_membership",
        "feedback.delete_membership",
        "labeling.view_queue",
        "labeling.add_queue",
        "labeling.change_queue",
        "labeling.view_samplingrun",
        "labeling.view_queueitem",
    ],
}


def role_group(role: str) -> Group:
    """The group of a role, with exactly the permissions ``ROLE_PERMISSIONS`` lists.

    Synced on every call (cheap: a few rows), so a deployment whose table grew gets the new
    permissions the next time anyone is granted a role; no data migration to forget.
    """
    group, _ = Group.objects.get_or_create(name=ROLE_GROUPS[role])
    wanted = Q()
    for dotted in ROLE_PERMISSIONS[role]:
        app_label, codename = dotted.split(".")
        wanted |= Q(content_type__app_label=app_label, codename=codename)
    group.permissions.set(Permission.objects.filter(wanted))
    return group


@transaction.atomic
def project_create(*, slug: str, name: str = "", description: str = "") -> Project:
    """Create a project with the default feedback taxonomy."""
    if Project.objects.filter(slug=slug).exists():
        raise Conflict.one("slug", "exists", f"A project {slug!r} exists already.")
    project = Project(slug=slug, name=name or slug, description=description)
    try:
        project.full_clean()
    except Exception as exc:  # django.core.exceptions.ValidationError
        raise InvalidInput.one("slug", "invalid", str(exc)) from exc
    project.save()
    FeedbackCategory.objects.bulk_create(
        FeedbackCategory(project=project, slug=c_slug, name=c_name, description=desc, position=i)
        for i, (c_slug, c_name, desc) in enumerate(DEFAULT_CATEGORIES)
    )
    project_cache_invalidate(project_id=project.pk)  # a token lookup may have cached "unknown"
    return project


def project_settings_changed(*, project: Project) -> None:
    """Call after editing a project or its taxonomy: cached key lookups carry both."""
    project_cache_invalidate(project_id=project.pk)


@transaction.atomic
def membership_grant(
    *,
    project: Project,
    username: str,
    role: str,
    password: str | None = None,
    actor: AbstractBaseUser | None = None,
) -> Membership:
    """Give a person (created if new, staff so they can log into the admin) a role in a project."""
    if role not in Membership.Role.values:
        raise InvalidInput.one(
            "role", "invalid_choice", f"Role must be one of {Membership.Role.values}."
        )
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    if password:
        user.set_password(password)
    elif created:
        user.set_unusable_password()
    user.is_staff = True  # the reviewer workspace lives in the admin
    user.save()
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    _role_groups_sync(user=user)
    return membership


@transaction.atomic
def membership_revoke(
    *, project: Project, username: str, actor: AbstractBaseUser | None = None
) -> str:
    """Take a person's role in a project away; returns the role they held.

    Their groups are brought back in step with the roles they still hold elsewhere (a person
    who was a data scientist only here loses the "Data scientists" group and with it every
    permission it gave), and a person left with no project at all is no longer staff (unless a
    superuser): membership_grant made them staff for the workspace. Raises NotFound when the
    person holds no role in the project.
    """
    membership = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(project=project, user__username=username)
        .first()
    )
    if membership is None:
        raise NotFound.one(
            "username", "not_a_member", f"{username!r} holds no role in {project.slug!r}."
        )
    user, role = membership.user, membership.role
    membership.delete()
    _role_groups_sync(user=user)
    if not user.is_superuser and not Membership.objects.filter(user=user).exists():
        user.is_staff = False
        user.save(update_fields=["is_staff"])
    logger.info(
        "membership revoked: %s was %s in %s (by %s)",
        username,
        role,
        project.slug,
        getattr(actor, "username", None) or "a command",
    )
    return role


def _role_groups_sync(*, user: AbstractBaseUser) -> None:
    """Groups follow the roles a person holds in any project: a demotion or a revocation drops
    the group of a role they no longer hold anywhere."""
    held = set(Membership.objects.filter(user=user).values_list("role", flat=True))
    user.groups.remove(
        *Group.objects.filter(name__in=[ROLE_GROUPS[r] for r in ROLE_GROUPS if r not in held])
    )
    for role in held:
        user.groups.add(role_group(role))
