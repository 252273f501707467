"""The gold-set admin: gold sets and their versions, draft items, publish, new draft, diff, and
the "Promote to gold draft" action of the queue-item list.

Who: gold content is private (DESIGN.md), so these pages go by project role rather than by
the role groups' Django permissions: a superuser, or a data scientist or project admin of the
gold set's project (``labeling.selectors.gold.GOLD_ROLES``) sees and curates it; nobody else
sees that it exists. Reviewers never reach it.

Writes go through ``labeling.services.goldsets``: creating a gold set (with its draft v1),
adding, changing and removing a draft's items (the version page's inline), publishing,
starting a new draft, discarding a draft, promoting queue items. A published version is
read-only here; a save that reaches one anyway (the page was opened while it was a draft) is
refused with a message saying why, and nothing is written.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from feedback.access import has_project_role, project_ids_for
from feedback.admin import adopt, counted, join_reasons, pretty_json
from feedback.errors import ServiceError
from feedback.models import Project

from ..models import GoldItem, GoldPurge, GoldSet, GoldSetVersion, QueueItem
from ..payloads.gold import gold_item_input, gold_set_input
from ..selectors.gold import GOLD_ROLES, goldset_list, goldset_versions_diff_detail
from ..services.goldsets import (
    gold_item_add,
    gold_item_promote,
    gold_item_remove,
    gold_item_update,
    goldset_create,
    goldset_update,
    goldset_version_create_draft,
    goldset_version_discard,
    goldset_version_publish,
    min_agreement_setting,
)
from .fields import CommaListField

# The promotion page pins the selected ids in hidden inputs (see feedback's resolve action).
PROMOTE_MAX_SELECTION = 500


def _errors(exc: ServiceError) -> str:
    return " ".join(error.detail for error in exc.errors)


# --- who may curate gold ---------------------------------------------------------------------


def gold_project_ids(request: HttpRequest) -> set[int] | None:
    """Projects whose gold the person curates (None: every project, a superuser)."""
    return project_ids_for(request, GOLD_ROLES)


def curates(request: HttpRequest, project_id: int | None = None) -> bool:
    return has_project_role(request, GOLD_ROLES, project_id)


class GoldScopedMixin:
    """By project role, not Django permissions (module docstring). ``project_lookup`` is the
    model's path to its project."""

    project_lookup = "project"

    def project_id_of(self, obj: Any) -> int:
        raise NotImplementedError

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        allowed = gold_project_ids(request)
        if allowed is None:
            return queryset
        return queryset.filter(**{f"{self.project_lookup}__in": allowed})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return curates(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return curates(request, None if obj is None else self.project_id_of(obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Published gold is deleted only by goldset_purge, deliberately, never from a list.
        return False


# --- gold sets -------------------------------------------------------------------------------


def add_payload_errors(form: forms.BaseForm, exc: ServiceError, fields: dict[str, str]) -> None:
    """The payload's refusals beside the form's fields (``fields``: payload path → form field;
    a path not listed shows above the form, naming its path)."""
    for error in exc.errors:
        path = error.field or ""
        name = fields.get(path) or fields.get(path.split("[")[0]) or fields.get(path.split(".")[0])
        if name in form.fields and name not in form.errors:
            form.add_error(name, error.detail)
        elif name not in form.errors:
            form.add_error(None, f"{path}: {error.detail}" if path else error.detail)


class GoldSetForm(forms.ModelForm):
    """Checked by the API's declaration (``gold_set_input``) on creation; the slug and project
    are read-only once created."""

    class Meta:
        model = GoldSet
        fields = ("project", "slug", "name", "description")
        widgets = {"description": forms.Textarea(attrs={"rows": 3, "cols": 80})}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        sent = {
            "slug": data.get("slug", self.instance.slug),
            "name": data.get("name") or "",
            "description": data.get("description") or "",
        }
        try:
            self.sent = gold_set_input(sent)
        except ServiceError as exc:
            add_payload_errors(self, exc, {name: name for name in sent})
        return data


class GoldSetVersionInline(admin.TabularInline):
    """The versions of a gold set, read-only, each linking to its page (items, publish)."""

    model = GoldSetVersion
    fk_name = "gold_set"
    fields = (
        "version_link",
        "status",
        "item_count",
        "short_checksum",
        "parent_number",
        "published_at",
        "published_by",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ("-number",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[GoldSetVersion]:
        return super().get_queryset(request).select_related("parent", "published_by")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return curates(request, None if obj is None else obj.project_id)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="version")
    def version_link(self, obj: GoldSetVersion) -> str:
        url = reverse("admin:labeling_goldsetversion_change", args=[obj.pk])
        return format_html('<a href="{}">v{}</a>', url, obj.number)

    @admin.display(description="checksum")
    def short_checksum(self, obj: GoldSetVersion) -> str:
        return short_checksum(obj)

    @admin.display(description="copied from")
    def parent_number(self, obj: GoldSetVersion) -> str:
        return f"v{obj.parent.number}" if obj.parent_id else "-"


def short_checksum(version: GoldSetVersion) -> str:
    if not version.checksum:
        return "-"
    return format_html('<code title="{}">{}…</code>', version.checksum, version.checksum[:12])


class DiffForm(forms.Form):
    version = forms.TypedChoiceField(coerce=int, label="Version")
    against = forms.TypedChoiceField(coerce=int, label="against")

    def __init__(self, *args: Any, numbers: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(n, f"v{n}") for n in numbers]
        self.fields["version"].choices = choices
        self.fields["against"].choices = choices


@admin.register(GoldSet)
class GoldSetAdmin(GoldScopedMixin, admin.ModelAdmin):
    form = GoldSetForm
    list_display = (
        "slug",
        "name",
        "project",
        "published_column",
        "draft_column",
        "version_count_column",
        "diff_link",
    )
    list_filter = (("project", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("slug", "name", "project__slug")
    list_select_related = ("project",)
    inlines = [GoldSetVersionInline]
    actions = ["publish_draft", "start_draft"]

    def project_id_of(self, obj: GoldSet) -> int:
        return obj.project_id

    def get_queryset(self, request: HttpRequest) -> QuerySet[GoldSet]:
        # The selector's annotations (latest published, draft), scoped like every admin list.
        allowed = gold_project_ids(request)
        if allowed is None:
            return goldset_list(project_ids=Project.objects.values("pk"))
        return goldset_list(project_ids=allowed)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return curates(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return curates(request, None if obj is None else obj.project_id)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "project":
            allowed = gold_project_ids(request)
            projects = Project.objects.all()
            kwargs["queryset"] = projects if allowed is None else projects.filter(pk__in=allowed)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: GoldSet | None) -> list[type]:
        return list(self.inlines) if obj is not None else []  # v1 is made with the gold set

    def get_readonly_fields(self, request: HttpRequest, obj: GoldSet | None = None) -> list[str]:
        # Clients address a gold set by project and slug: neither changes.
        return ["project", "slug", "created_by", "created_at"] if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: GoldSet | None = None) -> list[str]:
        fields = ["project", "slug", "name", "description"]
        return [*fields, "created_by", "created_at"] if obj is not None else fields

    def save_model(self, request: HttpRequest, obj: GoldSet, form: Any, change: bool) -> None:
        sent = form.sent
        if change:
            goldset_update(
                gold_set=obj, name=sent.name, description=sent.description, actor=request.user
            )
        else:
            adopt(
                obj,
                goldset_create(
                    project=form.cleaned_data["project"],
                    slug=sent.slug,
                    name=sent.name,
                    description=sent.description,
                    actor=request.user,
                ),
            )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the versions inline is read-only

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceError as exc:
            self.message_user(request, f"Not saved: {_errors(exc)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    # -- columns --

    @admin.display(description="latest published", ordering="latest_published")
    def published_column(self, obj: GoldSet) -> str:
        return f"v{obj.latest_published}" if obj.latest_published else "-"

    @admin.display(description="draft", ordering="draft_number")
    def draft_column(self, obj: GoldSet) -> str:
        return f"v{obj.draft_number}" if obj.draft_number else "-"

    @admin.display(description="versions", ordering="version_count")
    def version_count_column(self, obj: GoldSet) -> int:
        return obj.version_count

    @admin.display(description="")
    def diff_link(self, obj: GoldSet) -> str:
        if obj.version_count < 2:
            return ""
        url = reverse("admin:labeling_goldset_diff", args=[obj.pk])
        return format_html('<a href="{}">Diff</a>', url)

    # -- actions --

    @admin.action(description="Publish the draft of the selected gold sets")
    def publish_draft(self, request: HttpRequest, queryset: QuerySet[GoldSet]) -> None:
        drafts = GoldSetVersion.objects.filter(
            gold_set__in=queryset, status=GoldSetVersion.Status.DRAFT
        ).select_related("gold_set")
        _publish_each(self, request, list(drafts.order_by("pk")))
        without = queryset.exclude(versions__status=GoldSetVersion.Status.DRAFT)
        if without.exists():
            self.message_user(
                request,
                f"No draft to publish in {', '.join(g.slug for g in without)}.",
                messages.WARNING,
            )

    @admin.action(description="Start a new draft (a copy of the latest published version)")
    def start_draft(self, request: HttpRequest, queryset: QuerySet[GoldSet]) -> None:
        started, refused = [], []
        for gold_set in queryset.order_by("pk"):
            try:
                version = goldset_version_create_draft(gold_set=gold_set, actor=request.user)
            except ServiceError as exc:
                refused.append(f"{gold_set.slug}: {_errors(exc)}")
            else:
                started.append(f"{gold_set.slug} v{version.number} ({version.item_count} items)")
        if started:
            self.message_user(
                request,
                f"Started {counted(len(started), 'draft')}: {', '.join(started)}.",
                messages.SUCCESS,
            )
        if refused:
            self.message_user(
                request, f"Refused {len(refused)}: {join_reasons(refused)}", messages.WARNING
            )

    # -- the diff page --

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<path:object_id>/diff/",
                self.admin_site.admin_view(self.diff_view),
                name="labeling_goldset_diff",
            ),
        ]
        return custom + super().get_urls()

    def diff_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Added, removed and changed keys between two versions (default: the newest against
        the one it was copied from)."""
        gold_set = self.get_object(request, object_id)
        if gold_set is None:
            raise Http404("No such gold set of yours.")
        versions = {v.number: v for v in gold_set.versions.select_related("parent")}
        numbers = sorted(versions, reverse=True)
        newest = versions[numbers[0]] if numbers else None
        initial = {
            "version": numbers[0] if numbers else None,
            "against": (
                newest.parent.number
                if newest and newest.parent_id
                else (numbers[1] if len(numbers) > 1 else None)
            ),
        }
        form = DiffForm(request.GET or None, initial=initial, numbers=numbers)
        chosen = form.cleaned_data if form.is_bound and form.is_valid() else initial
        diff = None
        if chosen.get("version") and chosen.get("against"):
            version, against = versions[chosen["version"]], versions[chosen["against"]]
            detail = goldset_versions_diff_detail(version=version, against=against)
            diff = {
                "version": version,
                "against": against,
                "added": [detail["new"][key] for key in detail["added"]],
                "removed": [detail["old"][key] for key in detail["removed"]],
                "changed": [
                    {
                        "key": key,
                        "fields": detail["changed_fields"][key],
                        "before": detail["old"][key],
                        "after": detail["new"][key],
                    }
                    for key in detail["changed"]
                ],
                "unchanged": detail["unchanged"],
            }
        context = {
            **self.admin_site.each_context(request),
            "title": f"Diff: {gold_set}",
            "opts": self.opts,
            "original": gold_set,
            "gold_set": gold_set,
            "form": form,
            "diff": diff,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/labeling/goldset/diff.html", context)


def _publish_each(model_admin: Any, request: HttpRequest, drafts: list[GoldSetVersion]) -> None:
    published, refused = [], []
    for draft in drafts:
        if not curates(request, draft.gold_set.project_id):
            refused.append(f"{draft}: not a gold set of yours")
            continue
        try:
            version = goldset_version_publish(version=draft, actor=request.user)
        except ServiceError as exc:
            refused.append(f"{draft.gold_set.slug} v{draft.number}: {_errors(exc)}")
        else:
            published.append(
                f"{version.gold_set.slug} v{version.number} ({counted(version.item_count, 'item')}"
                f", sha256 {version.checksum[:12]}…)"
            )
    if published:
        model_admin.message_user(
            request, f"Published {', '.join(published)}: frozen for good.", messages.SUCCESS
        )
    if refused:
        model_admin.message_user(
            request, f"Refused {len(refused)}: {join_reasons(refused)}", messages.WARNING
        )


# --- versions and their items ----------------------------------------------------------------


# Where a refusal of the item's payload shows on the inline's form.
ITEM_FORM_FIELDS = {
    "key": "key",
    "input": "input",
    "output": "output",
    "segment": "segment",
    "expected": "expected_verdict",
    "expected.verdict": "expected_verdict",
    "expected.label": "expected_label",
    "expected.categories": "expected_categories",
}


class GoldItemForm(forms.ModelForm):
    expected_categories = CommaListField(
        required=False, help_text="Category slugs, comma-separated."
    )
    input = forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 40}))
    output = forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 40}))
    segment = forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 30}))

    class Meta:
        model = GoldItem
        fields = (
            "key",
            "expected_verdict",
            "expected_label",
            "expected_categories",
            "input",
            "output",
            "segment",
        )

    def clean(self) -> dict[str, Any]:
        """The item as the API sends it, checked by the same declaration (``gold_item_input``);
        its categories are checked against the taxonomy by the service, on save."""
        data = super().clean()
        if self.errors:
            return data
        sent = {
            "key": data.get("key"),
            "input": data.get("input"),
            "output": data.get("output"),
            "segment": data.get("segment") or {},
            "expected": {
                "verdict": data.get("expected_verdict") or None,
                "label": data.get("expected_label") or None,
                "categories": data.get("expected_categories") or [],
            },
        }
        try:
            self.item = gold_item_input(sent)
        except ServiceError as exc:
            add_payload_errors(self, exc, ITEM_FORM_FIELDS)
        return data


class GoldItemInline(admin.StackedInline):
    """A draft's items, editable (saved through the services); a published version's,
    read-only."""

    model = GoldItem
    form = GoldItemForm
    extra = 0
    readonly_fields = ("lineage",)
    frozen_fields = (
        "key",
        "expected_verdict",
        "expected_label",
        "categories_text",
        "input_json",
        "output_json",
        "segment_json",
        "lineage",
    )

    def get_fields(self, request: HttpRequest, obj: GoldSetVersion | None = None) -> Any:
        if obj is not None and obj.status == GoldSetVersion.Status.PUBLISHED:
            return self.frozen_fields
        return [*GoldItemForm.Meta.fields, "lineage"]

    def get_readonly_fields(self, request: HttpRequest, obj: GoldSetVersion | None = None) -> Any:
        if obj is not None and obj.status == GoldSetVersion.Status.PUBLISHED:
            return self.frozen_fields
        return self.readonly_fields

    def _draft_of_mine(self, request: HttpRequest, obj: GoldSetVersion | None) -> bool:
        return (
            obj is not None
            and obj.status == GoldSetVersion.Status.DRAFT
            and curates(request, obj.gold_set.project_id)
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return curates(request, None if obj is None else obj.gold_set.project_id)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._draft_of_mine(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._draft_of_mine(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._draft_of_mine(request, obj)

    @admin.display(description="categories")
    def categories_text(self, obj: GoldItem) -> str:
        return ", ".join(obj.expected_categories) or "-"

    @admin.display(description="input")
    def input_json(self, obj: GoldItem) -> str:
        return pretty_json(obj.input)

    @admin.display(description="output")
    def output_json(self, obj: GoldItem) -> str:
        return pretty_json(obj.output)

    @admin.display(description="segment")
    def segment_json(self, obj: GoldItem) -> str:
        return pretty_json(obj.segment)

    @admin.display(description="lineage")
    def lineage(self, obj: GoldItem) -> str:
        if obj.pk is None or obj.source_item_id is None:
            return "added by hand"
        url = reverse("admin:labeling_queueitem_change", args=[obj.source_item_id])
        agreement = (
            "" if obj.source_agreement is None else f", agreement {obj.source_agreement:.0%}"
        )
        return format_html(
            'queue item <a href="{}">#{}</a> · prediction {} ({}) · labels {}{}',
            url,
            obj.source_item_id,
            obj.source_external_id,
            obj.source_model_version or "no version",
            ", ".join(f"#{pk}" for pk in obj.source_label_ids) or "-",
            agreement,
        )


@admin.register(GoldSetVersion)
class GoldSetVersionAdmin(GoldScopedMixin, admin.ModelAdmin):
    project_lookup = "gold_set__project"
    list_display = (
        "__str__",
        "number",
        "status",
        "item_count",
        "checksum_column",
        "parent_column",
        "published_at",
        "published_by",
        "snapshot_links",
    )
    list_filter = ("status", ("gold_set", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("gold_set", "gold_set__project", "parent", "published_by")
    search_fields = ("gold_set__slug", "gold_set__project__slug")
    ordering = ("gold_set", "-number")
    fields = (
        "gold_set",
        "number",
        "status",
        "parent",
        "item_count",
        "checksum",
        "snapshot_links",
        "notes",
        "created_by",
        "created_at",
        "published_by",
        "published_at",
    )
    readonly_fields = fields
    inlines = [GoldItemInline]

    @admin.display(description="download")
    def snapshot_links(self, obj: GoldSetVersion) -> str:
        """The frozen snapshot as a file, through the API's download (it takes the session):
        the same bytes every time, carrying the version and its checksum."""
        if obj.status != GoldSetVersion.Status.PUBLISHED:
            return "-"
        url = reverse("goldset-export", args=[obj.gold_set.slug, obj.number])
        project = obj.gold_set.project.slug
        return format_html_join(
            " · ",
            '<a href="{}?format={}&amp;project={}" download>{}</a>',
            (
                (url, fmt, project, fmt.upper() if fmt != "jsonl" else "JSONL")
                for fmt in ("jsonl", "csv", "parquet")
            ),
        )

    actions = ["publish_selected", "discard_selected"]

    def project_id_of(self, obj: GoldSetVersion) -> int:
        return obj.gold_set.project_id

    def get_queryset(self, request: HttpRequest) -> QuerySet[GoldSetVersion]:
        return super().get_queryset(request).select_related("gold_set", "gold_set__project")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a draft starts from its gold set ("Start a new draft")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A published version's page is a view: frozen for good.
        if obj is not None and obj.status == GoldSetVersion.Status.PUBLISHED:
            return False
        return curates(request, None if obj is None else self.project_id_of(obj))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        version = self.get_object(request, object_id) if object_id else None
        if version is not None and version.status == GoldSetVersion.Status.PUBLISHED:
            if request.method == "POST":
                # A page opened while the version was a draft, saved after it was published.
                self.message_user(
                    request,
                    f"Not saved: {version} is published and frozen for good; its items cannot "
                    "change. Start a new draft from its gold set to change them.",
                    messages.ERROR,
                )
                return HttpResponseRedirect(request.get_full_path())
            self.message_user(
                request,
                f"v{version.number} is published (sha256 {version.checksum[:12]}…): frozen for "
                "good. Start a new draft from its gold set to change it.",
                messages.INFO,
            )
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceError as exc:  # the admin's transaction rolled every item change back
            self.message_user(request, f"Not saved: {_errors(exc)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        pass  # nothing on the version row is edited here; its items go through the services

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Each item change through its service (formset.save() would write rows directly);
        the lists the admin's change message reads are filled as formset.save() would."""
        version = form.instance
        deleted = [f for f in formset.deleted_forms if f.instance.pk is not None]
        if deleted:
            keys = [item_form.initial["key"] for item_form in deleted]
            gold_item_remove(version=version, keys=keys, actor=request.user)
        formset.deleted_objects = [item_form.instance for item_form in deleted]
        formset.new_objects, formset.changed_objects = [], []
        for item_form in formset.forms:
            if item_form in formset.deleted_forms or not item_form.has_changed():
                continue
            if item_form.instance.pk is None:
                item = gold_item_add(version=version, item=item_form.item, actor=request.user)
                formset.new_objects.append(item)
            else:
                item = gold_item_update(
                    version=version,
                    key=item_form.initial["key"],
                    item=item_form.item,
                    actor=request.user,
                )
                formset.changed_objects.append((item, item_form.changed_data))

    @admin.display(description="checksum")
    def checksum_column(self, obj: GoldSetVersion) -> str:
        return short_checksum(obj)

    @admin.display(description="copied from")
    def parent_column(self, obj: GoldSetVersion) -> str:
        return f"v{obj.parent.number}" if obj.parent_id else "-"

    @admin.action(description="Publish the selected drafts")
    def publish_selected(self, request: HttpRequest, queryset: QuerySet[GoldSetVersion]) -> None:
        _publish_each(self, request, list(queryset.order_by("pk")))

    @admin.action(description="Discard the selected drafts")
    def discard_selected(self, request: HttpRequest, queryset: QuerySet[GoldSetVersion]) -> None:
        discarded, refused = [], []
        for version in queryset.order_by("pk"):
            try:
                dropped = goldset_version_discard(version=version, actor=request.user)
            except ServiceError as exc:
                refused.append(f"{version.gold_set.slug} v{version.number}: {_errors(exc)}")
            else:
                discarded.append(f"{version.gold_set.slug} v{version.number} ({dropped} items)")
        if discarded:
            self.message_user(request, f"Discarded {', '.join(discarded)}.", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"Refused {len(refused)}: {join_reasons(refused)}", messages.WARNING
            )


# --- purges (read-only) ---------------------------------------------------------------------


@admin.register(GoldPurge)
class GoldPurgeAdmin(GoldScopedMixin, admin.ModelAdmin):
    """Who purged which gold set, with which versions, when and why: written by
    ``goldset_purge`` and never edited (a record outlives what it names)."""

    list_display = (
        "purged_at",
        "project_slug",
        "gold_set_slug",
        "version_numbers",
        "items_count",
        "purged_by_name",
        "reason",
    )
    list_filter = ("purged_at",)
    search_fields = ("project_slug", "gold_set_slug", "purged_by_name", "reason")
    fields = (
        "purged_at",
        "project_slug",
        "gold_set_slug",
        "gold_set_id_purged",
        "versions_json",
        "items_count",
        "purged_by_name",
        "reason",
    )
    readonly_fields = fields

    def project_id_of(self, obj: GoldPurge) -> int:
        return obj.project_id

    @admin.display(description="versions")
    def version_numbers(self, obj: GoldPurge) -> str:
        return ", ".join(f"v{v['number']} ({v['status']})" for v in obj.versions) or "-"

    @admin.display(description="versions purged (number, status, items, checksum)")
    def versions_json(self, obj: GoldPurge) -> str:
        return pretty_json(obj.versions)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- "Promote to gold draft" on the queue items ----------------------------------------------


class PromoteForm(forms.Form):
    required_css_class = "required"
    gold_set = forms.ModelChoiceField(
        queryset=GoldSet.objects.none(),
        help_text="The items go into its draft (a new draft, a copy of the latest published "
        "version, is started if it has none).",
    )
    min_agreement = forms.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text="The share of an item's labels that must agree with its consensus; "
        "empty: the default, REDRESS_GOLD_MIN_AGREEMENT.",
    )

    def __init__(self, *args: Any, gold_sets: QuerySet[GoldSet], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["gold_set"].queryset = gold_sets
        self.fields["min_agreement"].widget.attrs["placeholder"] = f"{min_agreement_setting()}"


def promote_to_gold_action(
    model_admin: Any, request: HttpRequest, queryset: QuerySet[QueueItem]
) -> HttpResponse | None:
    """The queue-item action: first POST shows the form (which gold set), the second
    (``post=yes``) promotes each item through ``gold_item_promote`` and reports counts
    promoted and skipped, with reasons."""
    items = list(
        queryset.select_related("queue", "queue__project").order_by("pk")[
            : PROMOTE_MAX_SELECTION + 1
        ]
    )
    if len(items) > PROMOTE_MAX_SELECTION:
        model_admin.message_user(
            request,
            f"Select at most {PROMOTE_MAX_SELECTION} items at a time; nothing was promoted.",
            messages.ERROR,
        )
        return None
    projects = {item.queue.project_id for item in items}
    allowed = gold_project_ids(request)
    if allowed is not None:
        projects &= allowed
    gold_sets = GoldSet.objects.filter(project_id__in=projects).select_related("project")
    if not gold_sets.exists():
        model_admin.message_user(
            request,
            "No gold set you curate in the projects of these items: create one first "
            "(Labeling: Gold sets).",
            messages.WARNING,
        )
        return None
    confirmed = request.POST.get("post") == "yes"
    form = PromoteForm(request.POST if confirmed else None, gold_sets=gold_sets)
    if confirmed and form.is_valid():
        _promote_each(
            model_admin,
            request,
            items,
            gold_set=form.cleaned_data["gold_set"],
            min_agreement=form.cleaned_data["min_agreement"],
        )
        return None
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Promote to gold draft",
        "opts": model_admin.opts,
        "action": "promote_to_gold",
        "items": items,
        "selected_pks": [item.pk for item in items],
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "form": form,
        "media": model_admin.media + form.media,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/labeling/goldset/promote.html", context)


def _promote_each(
    model_admin: Any,
    request: HttpRequest,
    items: list[QueueItem],
    *,
    gold_set: GoldSet,
    min_agreement: float | None,
) -> None:
    draft = gold_set.versions.filter(status=GoldSetVersion.Status.DRAFT).first()
    if draft is None:
        try:
            draft = goldset_version_create_draft(gold_set=gold_set, actor=request.user)
        except ServiceError as exc:
            model_admin.message_user(request, f"Nothing promoted: {_errors(exc)}", messages.ERROR)
            return
        model_admin.message_user(
            request,
            f"Started draft v{draft.number} of {gold_set.slug} "
            f"({counted(draft.item_count, 'item')} copied from the latest published version).",
            messages.INFO,
        )
    promoted, skipped = [], []
    for item in items:
        if item.queue.project_id != gold_set.project_id:
            skipped.append(f"#{item.pk}: another project ({item.queue.project.slug})")
            continue
        try:
            # One transaction per item: a refusal never undoes the others.
            gold = gold_item_promote(
                version=draft, item_id=item.pk, actor=request.user, min_agreement=min_agreement
            )
        except ServiceError as exc:
            skipped.append(f"#{item.pk}: {_errors(exc)}")
        else:
            promoted.append(gold.key)
    if promoted:
        model_admin.message_user(
            request,
            f"Promoted {counted(len(promoted), 'item')} to {gold_set.slug} v{draft.number}: "
            f"{', '.join(promoted[:20])}{' …' if len(promoted) > 20 else ''}.",
            messages.SUCCESS,
        )
    if skipped:
        model_admin.message_user(
            request,
            f"Skipped {counted(len(skipped), 'item')}: {join_reasons(skipped)}",
            messages.WARNING,
        )
