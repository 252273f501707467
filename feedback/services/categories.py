"""The feedback taxonomy: saving an entry and keeping cached key lookups in step with it."""

from __future__ import annotations

from django.db import transaction

from ..models import FeedbackCategory
from .projects import project_settings_changed


@transaction.atomic
def category_save(*, category: FeedbackCategory) -> FeedbackCategory:
    """Store a new or edited taxonomy entry and drop its project's cached key lookups.

    Precondition: ``category`` is validated (a ModelForm or ``full_clean`` did it). The cached
    ``KeyContext`` of every key of the project carries the active slugs, so without the
    invalidation intake would accept a deactivated slug (or refuse a new one) for up to
    ``KEY_CACHE_SECONDS``. The cache is dropped on commit, never before the row is visible.
    """
    category.save()
    project_settings_changed(project=category.project)
    return category
