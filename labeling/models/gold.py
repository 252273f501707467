"""Gold sets: small, private, versioned evaluation sets, frozen for good once published.

A version is a draft until it is published; publishing records a sha256 over its canonical
content and from then on neither the services (``labeling/services/goldsets.py``), nor the
guards below, nor on PostgreSQL a trigger (migration 0003) let anything change it or its
items. Items are frozen copies: lineage to the prediction, queue item and labels they came from
is kept by value, so editing or deleting a source never touches a published item.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from feedback.errors import Conflict, FieldError
from feedback.models import Project

from .queues import Label

# --- the model layer's guard on published gold (data integrity, not business rules) ----------
#
# Published gold is frozen for good: the services refuse such writes under a row lock, these
# guards refuse them for any other ORM path (a shell, a script, a future view), and on
# PostgreSQL a trigger (migration 0003) refuses even raw SQL. The only way to remove published
# gold is ``allow_gold_purge()`` (with ``SET LOCAL redress.gold_purge = 'on'`` on PostgreSQL),
# used by ``labeling.services.goldsets.goldset_purge``.

_purging: ContextVar[bool] = ContextVar("redress_gold_purge", default=False)


@contextmanager
def allow_gold_purge() -> Iterator[None]:
    """Lets the model layer delete published gold inside the block (the purge service only)."""
    token = _purging.set(True)
    try:
        yield
    finally:
        _purging.reset(token)


class PublishedGoldError(Conflict):
    """A write to a published gold-set version: a 409 through the API, a message in the admin."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            FieldError(
                "version",
                "published",
                detail
                or "This gold-set version is published and frozen for good; start a new draft "
                "to change its content.",
            )
        )


PUBLISHED = "published"
# What a published version may never change again (notes and the SET_NULL user links may).
FROZEN_VERSION_FIELDS = (
    "gold_set",
    "number",
    "status",
    "parent",
    "item_count",
    "checksum",
    "published_at",
)


class GoldSet(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_sets")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="goldset_unique_slug"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"


class GoldSetVersionQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        frozen = {name for field in FROZEN_VERSION_FIELDS for name in (field, f"{field}_id")}
        if frozen & set(kwargs) and self.filter(status=PUBLISHED).exists():
            raise PublishedGoldError()
        return super().update(**kwargs)


class GoldSetVersion(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    gold_set = models.ForeignKey(GoldSet, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        help_text="The published version this draft was copied from.",
    )
    item_count = models.PositiveIntegerField(default=0)
    checksum = models.CharField(max_length=64, blank=True)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)

    objects = GoldSetVersionQuerySet.as_manager()

    class Meta:
        ordering = ["gold_set", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["gold_set", "number"], name="goldversion_unique_number"
            ),
            # One draft at a time: a new draft is always a copy of the latest published version.
            models.UniqueConstraint(
                fields=["gold_set"], condition=Q(status="draft"), name="goldversion_one_draft"
            ),
            models.CheckConstraint(
                condition=Q(status="draft") | (Q(published_at__isnull=False) & ~Q(checksum="")),
                name="goldversion_published_has_checksum",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.gold_set} v{self.number} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            attnames = [self._meta.get_field(name).attname for name in FROZEN_VERSION_FIELDS]
            stored = type(self).objects.filter(pk=self.pk).values(*attnames).first()
            if (
                stored is not None
                and stored["status"] == PUBLISHED
                and any(stored[name] != getattr(self, name) for name in attnames)
            ):
                raise PublishedGoldError()
        super().save(*args, **kwargs)


@receiver(pre_delete, sender=GoldSetVersion)
def _refuse_deleting_published_version(sender: Any, instance: GoldSetVersion, **kwargs: Any):
    # A receiver, not a delete() override: deleting a gold set or a project cascades here
    # without calling any delete() method, and must be refused all the same.
    if instance.status == PUBLISHED and not _purging.get():
        raise PublishedGoldError(
            f"{instance} is published: it and its items cannot be deleted (only a deliberate "
            "purge of the gold set can)."
        )


class GoldItemQuerySet(models.QuerySet):
    def _refuse_if_published(self) -> None:
        if not _purging.get() and self.filter(version__status=PUBLISHED).exists():
            raise PublishedGoldError()

    def update(self, **kwargs: Any) -> int:
        self._refuse_if_published()
        target = kwargs.get("version", kwargs.get("version_id"))
        if target is not None:  # moving items into a published version changes it too
            target_id = getattr(target, "pk", target)
            if GoldSetVersion.objects.filter(pk=target_id, status=PUBLISHED).exists():
                raise PublishedGoldError()
        return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        self._refuse_if_published()
        return super().delete()

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[GoldItem]:
        objs = list(objs)
        versions = {obj.version_id for obj in objs}
        if GoldSetVersion.objects.filter(pk__in=versions, status=PUBLISHED).exists():
            raise PublishedGoldError()
        return super().bulk_create(objs, *args, **kwargs)


class GoldItem(models.Model):
    version = models.ForeignKey(GoldSetVersion, on_delete=models.CASCADE, related_name="items")
    key = models.CharField(max_length=255)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    expected_verdict = models.CharField(max_length=10, choices=Label.Verdict.choices, blank=True)
    expected_label = models.CharField(max_length=200, blank=True)
    expected_categories = models.JSONField(default=list, blank=True)
    segment = models.JSONField(default=dict, blank=True)
    # Lineage, by value (see the module docstring).
    source_prediction_id = models.BigIntegerField(null=True, blank=True)
    source_external_id = models.CharField(max_length=255, blank=True)
    source_model_version = models.CharField(max_length=100, blank=True)
    source_item_id = models.BigIntegerField(null=True, blank=True)
    source_label_ids = models.JSONField(default=list, blank=True)
    source_agreement = models.FloatField(null=True, blank=True)
    source_agreeing_labels = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="How many of the item's labels agreed with the consensus it was promoted with.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = GoldItemQuerySet.as_manager()

    class Meta:
        ordering = ["version", "key"]
        constraints = [
            models.UniqueConstraint(fields=["version", "key"], name="golditem_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key} in {self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._refuse_if_published()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        self._refuse_if_published()
        return super().delete(*args, **kwargs)

    def _refuse_if_published(self) -> None:
        if _purging.get():
            return
        # The version it is in now, and (for a stored row) the one it was in.
        touched = Q(pk=self.version_id) | Q(items__pk=self.pk) if self.pk else Q(pk=self.version_id)
        if GoldSetVersion.objects.filter(touched, status=PUBLISHED).exists():
            raise PublishedGoldError()


class GoldPurge(models.Model):
    """The record of one ``goldset_purge``: who removed which gold set, with which versions, and
    when. Written in the purge's own transaction before anything is deleted; on PostgreSQL the
    gold triggers (migration ``0005_gold_purge_whole_versions``) let published gold go only
    when such a row of the current transaction names its gold set. Values, not foreign keys:
    what it names is gone."""

    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    project_slug = models.SlugField(max_length=100)
    gold_set_id_purged = models.BigIntegerField(help_text="The purged gold set's id.")
    gold_set_slug = models.SlugField(max_length=100)
    versions = models.JSONField(
        default=list, help_text="Each version purged: number, status, item_count, checksum."
    )
    items_count = models.PositiveIntegerField(default=0)
    reason = models.TextField(blank=True)
    purged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    purged_by_name = models.CharField(
        max_length=150, blank=True, help_text="The username, kept if the user is deleted."
    )
    purged_at = models.DateTimeField(auto_now_add=True)
    # PostgreSQL's txid_current() of the purge; the triggers match it (null on SQLite).
    transaction_id = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-purged_at", "-pk"]
        indexes = [models.Index(fields=["transaction_id"], name="goldpurge_txid_idx")]

    def __str__(self) -> str:
        return f"{self.project_slug}/{self.gold_set_slug} purged {self.purged_at:%Y-%m-%d %H:%M}"
