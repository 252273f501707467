"""The feedback taxonomy: saving an entry and keeping cached key lookups in step with it."""

from __future__ import annotations

from django.db import transaction

from ..errors import Conflict
from ..models import FeedbackCategory
from .projects import project_settings_changed


@transaction.atomic
def category_save(*, category: FeedbackCategory) -> FeedbackCategory:
    """Store a new or edited taxonomy entry and drop its project's cached key lookups.

    Precondition: ``category`` is validated (a ModelForm or ``full_clean`` did it). The cached
    ``KeyContext`` of every key of the project carries the active slugs, so without the
    invalidation intake would accept a deactivated slug (or refuse a new one) for up to
    ``KEY_CACHE_SECONDS``. The cache is dropped on commit, never before the row is visible.

    A slug is immutable once created (409 on a change): feedback stores slugs themselves
    (``Feedback.categories``) and apps send them, so a renamed slug would leave stored
    feedback naming a category that no longer exists. Retire an entry by deactivating it.
    """
    if category.pk is not None:
        stored = (
            FeedbackCategory.objects.select_for_update()
            .filter(pk=category.pk)
            .values_list("slug", "project_id")
            .first()
        )
        if stored is not None and stored[0] != category.slug:
            raise Conflict.one(
                "slug",
                "immutable",
                f"The slug of a category cannot change once created (it stays {stored[0]!r}); "
                "deactivate it and add a new one instead.",
            )
        if stored is not None and stored[1] != category.project_id:
            raise Conflict.one(
                "project", "immutable", "A category cannot move to another project."
            )
    category.save()
    project_settings_changed(project=category.project)
    return category
