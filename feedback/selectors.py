"""Read queries of the intake app."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import ApiKey, Feedback, FeedbackCategory, Membership, Project
from .redis_cache import degraded
from .services.keys import cache_key_for_hash, hash_key

# A cached key lookup lives this long; revocation and project edits drop it at once, the TTL
# only bounds what a raw database edit could leave stale. It is also the granularity of
# ``ApiKey.last_used_at``, written once per cache refill instead of once per request.
KEY_CACHE_SECONDS = 60
# While Redis is unavailable a process keeps the lookups it loaded this long itself: without
# Redis every request would read the key and write its ``last_used_at`` in the database. A
# revocation then reaches the other processes within this time.
KEY_FALLBACK_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class KeyContext:
    """What a request authenticated by an API key needs, cached as one entry."""

    key_id: int
    scopes: tuple[str, ...]
    project_id: int
    project_slug: str
    project_secret: str
    scrub_pii: bool
    categories: dict[str, int]  # active slug → id, in taxonomy order

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def api_key_context(raw_key: str) -> KeyContext | None:
    """Resolve a raw key to its context, or None when unknown or revoked."""
    key_hash = hash_key(raw_key)
    cached = cache.get(cache_key_for_hash(key_hash))
    if cached is not None:
        return cached or None  # False caches "unknown or revoked"
    return api_key_context_load(key_hash)


class _FallbackContexts:
    """Key lookups kept by this process while the shared cache (Redis) is unavailable."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[KeyContext | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, KeyContext | None]:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, key: str, context: KeyContext | None) -> None:
        with self._lock:
            if len(self._entries) >= 10_000:
                self._entries.clear()
            self._entries[key] = (context, time.monotonic() + KEY_FALLBACK_SECONDS)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


fallback_contexts = _FallbackContexts()


def api_key_context_load(key_hash: str) -> KeyContext | None:
    """The context of a key not in the cache, from the database; cached for the next ones.

    While Redis is unavailable (``feedback.redis_cache``) the process keeps it itself for
    ``KEY_FALLBACK_SECONDS`` instead, and serves it from there."""
    cache_key = cache_key_for_hash(key_hash)
    if degraded(cache):
        fallback_key = cache.make_key(cache_key)
        found, context = fallback_contexts.get(fallback_key)
        if not found:
            context = _context_from_database(key_hash, cache_key)
            fallback_contexts.put(fallback_key, context)
        return context
    return _context_from_database(key_hash, cache_key)


def _context_from_database(key_hash: str, cache_key: str) -> KeyContext | None:
    key = (
        ApiKey.objects.select_related("project")
        .filter(key_hash=key_hash, revoked_at__isnull=True)
        .first()
    )
    if key is None:
        cache.set(cache_key, False, KEY_CACHE_SECONDS)
        return None
    context = KeyContext(
        key_id=key.pk,
        scopes=tuple(key.scopes),
        project_id=key.project_id,
        project_slug=key.project.slug,
        project_secret=key.project.secret,
        scrub_pii=key.project.scrub_pii,
        categories=active_categories(project_id=key.project_id),
    )
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    cache.set(cache_key, context, KEY_CACHE_SECONDS)
    return context


def project_context(*, project: Project, scopes: tuple[str, ...] = ()) -> KeyContext:
    """A context for intake on behalf of a project without a key (seeding, imports, tests)."""
    return KeyContext(
        key_id=0,
        scopes=scopes,
        project_id=project.pk,
        project_slug=project.slug,
        project_secret=project.secret,
        scrub_pii=project.scrub_pii,
        categories=active_categories(project_id=project.pk),
    )


def active_categories(*, project_id: int) -> dict[str, int]:
    return dict(
        FeedbackCategory.objects.filter(project_id=project_id, active=True)
        .order_by("position", "slug")
        .values_list("slug", "id")
    )


def category_list(*, project_id: int) -> QuerySet[FeedbackCategory]:
    return FeedbackCategory.objects.filter(project_id=project_id, active=True).order_by(
        "position", "slug"
    )


def projects_for_user(
    *, user: AbstractBaseUser, roles: list[str] | None = None
) -> QuerySet[Project]:
    """Projects a person may act in (all of them for a superuser)."""
    if user.is_superuser:
        return Project.objects.all()
    memberships = Membership.objects.filter(user=user)
    if roles is not None:
        memberships = memberships.filter(role__in=roles)
    return Project.objects.filter(pk__in=memberships.values("project_id"))


def feedback_list(*, project_ids: list[int] | QuerySet) -> QuerySet[Feedback]:
    return Feedback.objects.filter(project_id__in=project_ids).select_related(
        "prediction", "project"
    )


def with_any_category(slugs: list[str], *, path: str = "categories") -> Q:
    """Feedback (or, through ``path``, rows related to feedback) holding at least one of
    ``slugs``: the one category filter of the API, the admin, sampling and dashboards.
    PostgreSQL: JSON containment served by the GIN index; SQLite: ``json_each``. See
    ``feedback.fields.ContainsAny``."""
    return Q(**{f"{path}__contains_any": list(slugs)})


def dispute_get(*, project_ids: list[int] | QuerySet, dispute_id: int) -> Feedback | None:
    return (
        Feedback.objects.filter(
            project_id__in=project_ids, kind=Feedback.Kind.DISPUTE, pk=dispute_id
        )
        .only("id", "status", "resolution_note", "resolved_at")
        .first()
    )


# --- browser feedback tokens -----------------------------------------------------------------

# A token request needs its project's secrets, origins and intake context: cached like a key's
# context, under the slug the token names. Each process also keeps what it read for
# TOKEN_PROJECT_LOCAL_SECONDS, so the request's one Redis round trip is its rate-limit counters
# (bench: a second round trip cost more than the token check itself). A rotation or an edit
# drops both at once in the process that made it, and reaches the others within that second.
TOKEN_PROJECT_CACHE_PREFIX = "ftproject:"
TOKEN_ORIGINS_CACHE_KEY = "ftorigins"
TOKEN_PROJECT_LOCAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TokenProject:
    """What a request with a feedback token needs of the token's project."""

    intake: KeyContext  # intake's context, as for a key (key_id 0, no scopes)
    secret: str  # "" while the project has none
    previous_secret: str  # accepted until previous_until (epoch seconds), after a rotation
    previous_until: float
    allowed_origins: frozenset[str]

    def secrets(self, now: float) -> list[str]:
        found = [self.secret] if self.secret else []
        if self.previous_secret and now < self.previous_until:
            found.append(self.previous_secret)
        return found


class _LocalMemo:
    """Values kept by this process for a short time (``TOKEN_PROJECT_LOCAL_SECONDS``)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[object, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, object]:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, key: str, value: object) -> None:
        with self._lock:
            if len(self._entries) >= 10_000:
                self._entries.clear()
            self._entries[key] = (value, time.monotonic() + TOKEN_PROJECT_LOCAL_SECONDS)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


token_memo = _LocalMemo()


SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")


def token_project(slug: str) -> TokenProject | None:
    """The token context of the project ``slug``, or None when there is no such project."""
    if not SLUG.fullmatch(slug):
        return None  # what a token says is unchecked here: no lookup for what is not a slug
    cache_key = TOKEN_PROJECT_CACHE_PREFIX + slug
    found, value = token_memo.get(cache_key)
    if found:
        return value  # type: ignore[return-value]
    cached = cache.get(cache_key)
    if cached is None:
        cached = _token_project_load(slug)
        cache.set(cache_key, cached if cached is not None else False, KEY_CACHE_SECONDS)
    context = cached or None
    token_memo.put(cache_key, context)
    return context


def _token_project_load(slug: str) -> TokenProject | None:
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        return None
    until = project.token_secret_previous_until
    return TokenProject(
        intake=project_context(project=project),
        secret=project.token_secret,
        previous_secret=project.token_secret_previous if until is not None else "",
        previous_until=until.timestamp() if until is not None else 0.0,
        allowed_origins=frozenset(project.allowed_origins or ()),
    )


def token_origins() -> frozenset[str]:
    """Every origin some project allows: what a CORS preflight (which carries no token) is
    checked against."""
    found, value = token_memo.get(TOKEN_ORIGINS_CACHE_KEY)
    if found:
        return value  # type: ignore[return-value]
    origins = cache.get(TOKEN_ORIGINS_CACHE_KEY)
    if origins is None:
        origins = frozenset(
            origin
            for listed in Project.objects.exclude(allowed_origins=[]).values_list(
                "allowed_origins", flat=True
            )
            for origin in (listed or ())
        )
        cache.set(TOKEN_ORIGINS_CACHE_KEY, origins, KEY_CACHE_SECONDS)
    token_memo.put(TOKEN_ORIGINS_CACHE_KEY, origins)
    return origins


def token_dispute_get(*, project_id: int, dispute_id: int, prediction: str, end_user: str):
    """A dispute filed from a browser for this prediction by this end user (pseudonymised),
    or None: what a feedback token may read."""
    return (
        Feedback.objects.filter(
            project_id=project_id,
            kind=Feedback.Kind.DISPUTE,
            origin=Feedback.Origin.TOKEN,
            pk=dispute_id,
            prediction__external_id=prediction,
            end_user=end_user,
        )
        .only("id", "status", "resolution_note", "resolved_at")
        .first()
    )
