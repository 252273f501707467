"""Who is calling, which projects they may touch, and whether a refusal is 404 or 403.

Every API request has one ``Caller`` (``caller_of(request)``, cached on the request):

- ``KeyCaller``: a project API key. It acts in its own project only, with its scopes. It wraps
  the ``KeyContext`` of ``feedback.selectors`` (``caller.key``) that intake takes.
- ``PersonCaller``: a person (a token or the admin session). What they may do in a project is
  decided by their role there (``Membership.Role``); a superuser may everything.

What an action needs is an ``Access``: the scope a key needs (or any key of the project), and the
roles of a person that have it. Endpoints name an ``Access`` and ask the caller:

- ``caller.project(ACCESS, slug=...)``: the project to act in, or the error: 400 when a person
  names none, 404 for a project that is not theirs (or not the key's), 403 for a project they
  belong to in a role without the access.
- ``caller.project_ids(ACCESS)``: the projects where the caller has the access (a queryset filter).
- ``caller.check(ACCESS, project_id=..., not_found=...)``: the same 404/403 decision for an
  object found by id.
- ``Needs(ACCESS)``: the DRF permission class (403 before the view runs: a key without the scope;
  for a ``people_need_project`` access, a person without the role in any project).

A new kind of caller (a browser feedback token bound to one project) subclasses
``ProjectBoundCaller`` like ``KeyCaller``; a new API module names an existing ``Access`` (or
declares one here), and needs no rule of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from ..errors import FieldError, InvalidInput, NotFound
from ..models import Membership, Project
from ..selectors import KeyContext, projects_for_user
from .token_grant import TokenGrant

Role = Membership.Role
ALL_ROLES = (Role.ADMIN, Role.DATA_SCIENTIST, Role.REVIEWER)
DATA_ROLES = (Role.ADMIN, Role.DATA_SCIENTIST)


@dataclass(frozen=True)
class Access:
    """What an action needs. ``scope``: the scope a key needs (None: no key has the access,
    unless ``any_key``). ``roles``: the roles of a person that have it in a project.
    ``people_need_project``: a person without the access in any project is refused (403) at the
    door, not answered with an empty list."""

    name: str
    denied: str
    scope: str | None = None
    any_key: bool = False
    roles: tuple[str, ...] = ()
    people_need_project: bool = False
    # A person naming a project they belong to without the access is told it is not found
    # (404) rather than forbidden (403): "no project of yours that you administer".
    conceal: bool = False
    # Further grants for people, registered by other apps (``grant``): each returns the ids of
    # projects where the person has the access beyond ``roles``.
    grants: list[Callable[[AbstractBaseUser], QuerySet]] = field(
        default_factory=list, compare=False, hash=False, repr=False
    )


INGEST = Access(
    "ingest",
    "This endpoint takes a project API key with the 'ingest' scope.",
    scope="ingest",
)
MEMBER = Access(
    "member",
    "This takes an API key of the project, or a member of it.",
    any_key=True,
    roles=ALL_ROLES,
)
# Feedback carries segments: reading it would defeat blind review for a reviewer, unless a queue
# they review shows segments anyway (that grant is registered by the labeling app).
FEEDBACK_READ = Access(
    "feedback_read",
    "Reading feedback is for the project's data scientists and admins (and reviewers of a "
    "queue that shows segments).",
    scope="data",
    roles=DATA_ROLES,
)
# A project's data: queues' statistics, gold sets, exports, audits.
DATA = Access(
    "data",
    "This is for the project's data scientists and admins, or an API key with the 'data' scope.",
    scope="data",
    roles=DATA_ROLES,
)
GOLD = Access(
    "gold",
    "Gold sets take a project API key with the 'data' scope, or a data scientist or admin "
    "of the project.",
    scope="data",
    roles=DATA_ROLES,
    people_need_project=True,
    conceal=True,  # another project's gold is 404, whatever the person's role there
)
MANAGE = Access(
    "manage",
    "Only the project's admins may change its queues.",
    roles=(Role.ADMIN,),
    conceal=True,
)
RESOLVE = Access(
    "resolve",
    "Disputes are resolved by the project's admins (a person, not an API key).",
    roles=(Role.ADMIN,),
)
# Reviewing is decided per queue (``labeling.selectors.can_review``); keys never review.
PEOPLE = Access(
    "people",
    "This endpoint is for people (a token or the admin session), not API keys.",
    roles=ALL_ROLES,
)


def grant(access: Access, projects: Callable[[AbstractBaseUser], QuerySet]) -> None:
    """Let another app widen ``access`` for people (``labeling`` does, for reviewers of a
    queue that shows segments), without ``feedback`` importing it."""
    if projects not in access.grants:
        access.grants.append(projects)


def project_not_found(slug: str, *, field_name: str = "project") -> NotFound:
    return NotFound(FieldError(field_name, "not_found", f"No project {slug!r} of yours."))


class Caller:
    """The authenticated caller of a request. ``user`` is the person (the services' ``actor``),
    None for a key; ``key`` the key's context, None for a person."""

    user: AbstractBaseUser | None = None
    key: KeyContext | None = None

    @property
    def is_person(self) -> bool:
        return self.user is not None

    @property
    def key_id(self) -> int | None:
        return self.key.key_id if self.key is not None else None

    def has_scope(self, scope: str) -> bool:
        return False

    def may(self, access: Access) -> bool:
        """May the caller reach an endpoint needing ``access`` at all (the permission check)?"""
        raise NotImplementedError

    def project_ids(self, access: Access) -> QuerySet | list[int]:
        """Ids of the projects where the caller has ``access``, as a filter value."""
        raise NotImplementedError

    def projects(self, access: Access) -> QuerySet[Project]:
        return Project.objects.filter(pk__in=self.project_ids(access))

    def is_member(self, project_id: int) -> bool:
        """Does the caller belong to the project (in any role, or as its key)?"""
        raise NotImplementedError

    def project(
        self,
        access: Access,
        *,
        slug: Any = None,
        field_name: str = "project",
        sole: bool = False,
    ) -> Project:
        """The project to act in, named by ``slug``, or the error. A key may leave it out (its
        own project); so may a person with ``sole`` who has the access in one project only."""
        raise NotImplementedError

    def check(self, access: Access, *, project_id: int, not_found: FieldError) -> None:
        """An object of ``project_id`` was asked for: 404 (``not_found``) unless the caller
        belongs to the project, 403 when they do in a role without ``access``."""
        if project_id in set(self.project_ids_list(access)):
            return
        if self.is_member(project_id):
            raise PermissionDenied(access.denied)
        raise NotFound(not_found)

    def require(self, access: Access, *, project_id: int) -> None:
        """An object the caller may see, in a project where ``access`` is needed to go on: 403
        unless they have it there."""
        if project_id not in set(self.project_ids_list(access)):
            raise PermissionDenied(access.denied)

    def refuse_listing(self, access: Access, *, slug: str | None = None) -> None:
        """For a listing across the caller's projects: 403 for a person who belongs to
        projects without ``access`` in any of them, or who names (``slug``) one of those."""

    def project_ids_list(self, access: Access) -> list[int]:
        ids = self.project_ids(access)
        return list(ids.values_list("pk", flat=True)) if isinstance(ids, QuerySet) else ids

    def _slug(self, slug: Any, field_name: str) -> str | None:
        if slug is None or slug == "":
            return None
        if not isinstance(slug, str):
            raise InvalidInput.one(field_name, "invalid_type", "The project's slug.")
        if "\x00" in slug:
            raise InvalidInput.one(field_name, "invalid", "NUL characters are not allowed.")
        return slug


class ProjectBoundCaller(Caller):
    """A caller bound to one project with scopes: an API key (and, later, a browser token)."""

    project_id: int
    project_slug: str
    scopes: tuple[str, ...]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def allows(self, access: Access) -> bool:
        return access.any_key or (access.scope is not None and access.scope in self.scopes)

    def may(self, access: Access) -> bool:
        return self.allows(access)

    def project_ids(self, access: Access) -> list[int]:
        return [self.project_id] if self.allows(access) else []

    def is_member(self, project_id: int) -> bool:
        return project_id == self.project_id

    def project(self, access, *, slug=None, field_name="project", sole=False) -> Project:
        named = self._slug(slug, field_name)
        if named is not None and named != self.project_slug:
            raise project_not_found(named, field_name=field_name)
        if not self.allows(access):
            raise PermissionDenied(access.denied)
        return Project.objects.get(pk=self.project_id)


class KeyCaller(ProjectBoundCaller):
    def __init__(self, key: KeyContext) -> None:
        self.key = key
        self.project_id = key.project_id
        self.project_slug = key.project_slug
        self.scopes = key.scopes

    def __repr__(self) -> str:
        return f"<KeyCaller key={self.key.key_id} project={self.project_id}>"


class TokenCaller(ProjectBoundCaller):
    """An end user's browser with a feedback token (``feedback/api/token_grant.py``): its own
    project, no scopes, and of the accesses only ``MEMBER`` (categories, its disputes). What
    it may reach at all is decided first by ``FeedbackTokenAuthentication``'s list."""

    def __init__(self, grant: TokenGrant) -> None:
        self.grant = grant
        self.project_id = grant.project_id
        self.project_slug = grant.claims.project
        self.scopes = ()

    def __repr__(self) -> str:
        return f"<TokenCaller project={self.project_id} prediction={self.grant.claims.prediction}>"

    def allows(self, access: Access) -> bool:
        return access is MEMBER


class PersonCaller(Caller):
    def __init__(self, user: AbstractBaseUser) -> None:
        self.user = user

    def __repr__(self) -> str:
        return f"<PersonCaller {self.user}>"

    def may(self, access: Access) -> bool:
        if not (access.roles or access.grants):
            return False
        if access.people_need_project:
            return self.projects(access).exists()
        return True

    def project_ids(self, access: Access) -> QuerySet:
        if self.user.is_superuser:
            return Project.objects.values("pk")
        where = Q(pk__in=projects_for_user(user=self.user, roles=list(access.roles)).values("pk"))
        if not access.roles:
            where = Q(pk__in=[])
        for extra in access.grants:
            where |= Q(pk__in=extra(self.user))
        return Project.objects.filter(where).values("pk")

    def is_member(self, project_id: int) -> bool:
        return Membership.objects.filter(user=self.user, project_id=project_id).exists()

    def is_member_of_slug(self, slug: str) -> bool:
        return Membership.objects.filter(user=self.user, project__slug=slug).exists()

    def refuse_listing(self, access: Access, *, slug: str | None = None) -> None:
        memberships = Membership.objects.filter(user=self.user)
        if self.user.is_superuser or not memberships.exists():
            return
        allowed = self.project_ids(access)
        if slug:
            denied = memberships.filter(project__slug=slug).exclude(project_id__in=allowed)
            if denied.exists():
                raise PermissionDenied(access.denied)
        elif not Project.objects.filter(pk__in=allowed).exists():
            raise PermissionDenied(access.denied)

    def project(self, access, *, slug=None, field_name="project", sole=False) -> Project:
        named = self._slug(slug, field_name)
        if named is None and sole:
            found = list(self.projects(access)[:2])
            if len(found) == 1:
                return found[0]
        if named is None:
            raise InvalidInput.one(
                field_name, "required", f"Name the project: {field_name}=<slug>."
            )
        project = self.projects(access).filter(slug=named).first()
        if project is not None:
            return project
        if not access.conceal and self.is_member_of_slug(named):
            raise PermissionDenied(access.denied)
        raise project_not_found(named, field_name=field_name)


class AnonymousCaller(Caller):
    def may(self, access: Access) -> bool:
        return False

    def project_ids(self, access: Access) -> list[int]:
        return []

    def is_member(self, project_id: int) -> bool:
        return False


CALLER_ATTRIBUTE = "redress_caller"


def caller_of(request) -> Caller:
    """The caller of a DRF request (after authentication), made once per request."""
    http_request = getattr(request, "_request", request)
    found = getattr(http_request, CALLER_ATTRIBUTE, None)
    if found is not None:
        return found
    auth = getattr(request, "auth", None)
    user = getattr(request, "user", None)
    if isinstance(auth, KeyContext):
        made: Caller = KeyCaller(auth)
    elif isinstance(auth, TokenGrant):
        made = TokenCaller(auth)
    elif user is not None and user.is_authenticated:
        made = PersonCaller(user)
    else:
        made = AnonymousCaller()
    setattr(http_request, CALLER_ATTRIBUTE, made)
    return made


class Needs(BasePermission):
    """``permission_classes = [Needs.of(DATA)]``: 403 (with the access's reason) for a caller
    who may not reach the endpoint at all; the project-level decision comes in the view."""

    access: Access

    @classmethod
    def of(cls, access: Access) -> type[Needs]:
        """A permission class for ``access`` (make it once, at import)."""
        return type(f"Needs_{access.name}", (cls,), {"access": access, "message": access.denied})

    def has_permission(self, request, view) -> bool:
        return caller_of(request).may(self.access)
