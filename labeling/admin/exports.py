"""Exports in the admin: the list (status, progress, rows, checksum, a download link), a create
form that calls ``export_create``, and a "Retry" action for failed exports.

Who: superusers, and the data scientists and admins of a project for that project's exports
(the API's rule; checked on the role, as ``labeling.selectors.READ_ROLES`` says, rather than on
model permissions the role groups do not carry).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from feedback.access import has_project_role
from feedback.admin import pretty_json
from feedback.errors import ServiceError
from feedback.models import Project
from feedback.selectors import projects_for_user

from ..exports.request import export_request
from ..models import Export, Queue
from ..selectors import READ_ROLES
from ..services.exports import export_create, export_retry


def _readable_projects(request: HttpRequest) -> QuerySet[Project]:
    return projects_for_user(user=request.user, roles=READ_ROLES)


class QueueSelect(forms.Select):
    """Each queue option names its project (``data-project``), so the form's script offers only
    the chosen project's queues; the form refuses a mismatch anyway."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-project"] = str(instance.project_id)
        return option


# A browser date-time picker; its value ("2026-11-01T09:30") is read as UTC by the form.
DATE_PICKER = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class ExportCreateForm(forms.ModelForm):
    """The API request as a form; ``export_request`` (the API's serializer) checks it and names
    the field at fault."""

    train = forms.FloatField(initial=0.8, min_value=0, max_value=1)
    validation = forms.FloatField(initial=0.1, min_value=0, max_value=1)
    test = forms.FloatField(initial=0.1, min_value=0, max_value=1)
    split_key = forms.CharField(
        initial="external_id",
        help_text="external_id, or a segment key written as segment.&lt;key&gt;, such as "
        "<code>segment.locale</code>: rows with the same value go to the same split.",
    )
    seed = forms.IntegerField(initial=0, min_value=0)
    split_by = forms.ChoiceField(
        choices=[
            ("hash", "hash of the key (the shares above)"),
            ("time", "time (the dates below)"),
        ],
        initial="hash",
        required=False,
        label="Split by",
        help_text="time: by the prediction's occurred_at, train before the validation date, "
        "validation before the test date, test after (no look-ahead).",
    )
    validation_from = forms.DateTimeField(
        required=False, widget=DATE_PICKER, help_text="Time split, UTC: first time in validation."
    )
    test_from = forms.DateTimeField(
        required=False, widget=DATE_PICKER, help_text="Time split, UTC: first time in test."
    )
    include_labels = forms.BooleanField(required=False)
    include_comments = forms.BooleanField(
        required=False, help_text="The end users' feedback comments (scrubbed at intake)."
    )
    exclude_gold_from_train = forms.BooleanField(required=False, initial=True)
    model_version = forms.CharField(required=False)
    completed_after = forms.DateTimeField(
        required=False, widget=DATE_PICKER, help_text="UTC. Reviews completed at or after."
    )
    completed_before = forms.DateTimeField(
        required=False, widget=DATE_PICKER, help_text="UTC. Reviews completed before."
    )
    segment = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": '{"locale": "de-DE"}', "size": 40}),
        help_text='A JSON object of segment values rows must have, e.g. {"locale": "de-DE"}; '
        "empty for every segment.",
    )

    class Meta:
        model = Export
        fields = ["project", "queue", "format"]
        widgets = {"queue": QueueSelect}

    def clean_segment(self) -> dict[str, Any] | None:
        text = (self.cleaned_data.get("segment") or "").strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            raise forms.ValidationError(
                'Not JSON: write an object, e.g. {"locale": "de-DE"}.'
            ) from None
        if not isinstance(value, dict):
            raise forms.ValidationError('A JSON object, e.g. {"locale": "de-DE"}.')
        return value

    def _clean_when(self, name: str) -> Any:
        value = self.cleaned_data.get(name)
        # The picker has no zone: its wall-clock time is UTC, as the help says.
        return value.replace(tzinfo=dt.UTC) if value is not None else None

    def clean_completed_after(self) -> Any:
        return self._clean_when("completed_after")

    def clean_completed_before(self) -> Any:
        return self._clean_when("completed_before")

    def clean_validation_from(self) -> Any:
        return self._clean_when("validation_from")

    def clean_test_from(self) -> Any:
        return self._clean_when("test_from")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        project, queue = data.get("project"), data.get("queue")
        if project is not None and queue is not None and queue.project_id != project.pk:
            self.add_error("queue", f"{queue.name} is a queue of another project.")
        return data

    def request_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        spec_filter: dict[str, Any] = {}
        if data.get("model_version"):
            spec_filter["model_version"] = data["model_version"]
        for name in ("completed_after", "completed_before"):
            if data.get(name):
                spec_filter[name] = data[name].isoformat()
        if data.get("segment"):
            spec_filter["segment"] = data["segment"]
        split: dict[str, Any] = {
            "train": data["train"],
            "validation": data["validation"],
            "test": data["test"],
            "key": data["split_key"],
            "seed": data["seed"],
        }
        if data.get("split_by") == "time":
            split = {
                "by": "time",
                **{
                    name: data[name].isoformat() if data.get(name) else None
                    for name in ("validation_from", "test_from")
                },
            }
        return {
            "queue": data["queue"].pk if data.get("queue") else None,
            "format": data["format"],
            "filter": spec_filter,
            "include_labels": data["include_labels"],
            "include": ["comments"] if data.get("include_comments") else [],
            "exclude_gold_from_train": data["exclude_gold_from_train"],
            "split": split,
        }


# Nested values longer than this (as JSON text) fold away under a summary line.
FOLD_AT = 120


def json_table(value: Any) -> str:
    """A JSON object as a two-column table: short values inline, long nested ones folded.

    A manifest is a few dozen keys, some of them lists of hundreds of entries (gold versions,
    counts per split): a table with folds reads at a glance where one pretty dump ran 2,000 px.
    """
    if not isinstance(value, dict) or not value:
        return pretty_json(value) if value not in (None, {}, []) else "-"
    rows = []
    for key, item in value.items():
        if isinstance(item, (dict, list)):
            text = json.dumps(item, ensure_ascii=False, sort_keys=True)
            if len(text) <= FOLD_AT:
                cell = format_html("<code>{}</code>", text)
            else:
                size = f"{len(item)} {'keys' if isinstance(item, dict) else 'entries'}"
                cell = format_html(
                    '<details><summary>{}</summary><pre style="{}">{}</pre></details>',
                    size,
                    "max-height: 24em; overflow: auto; white-space: pre-wrap; margin: 0.3em 0",
                    json.dumps(item, indent=2, ensure_ascii=False, sort_keys=True),
                )
        elif item is None:
            cell = "-"
        else:
            cell = format_html("{}", item)
        rows.append((key, cell))
    return format_html(
        '<table class="json-table" style="margin: 0">{}</table>',
        format_html_join(
            "",
            '<tr><th scope="row" style="white-space: nowrap; font-weight: 600">{}</th>'
            "<td>{}</td></tr>",
            rows,
        ),
    )


FORM_FIELDS = {
    "split_key": "split.key",
    "train": "split.train",
    "validation": "split.validation",
    "test": "split.test",
    "seed": "split.seed",
    "split_by": "split.by",
    "validation_from": "split.validation_from",
    "test_from": "split.test_from",
    "include_comments": "include",
}


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "queue",
        "format",
        "status",
        "progress_percent",
        "rows",
        "short_checksum",
        "created_at",
        "download",
    ]
    list_filter = ["status", "format", "project"]
    list_select_related = ["project", "queue"]
    search_fields = ["checksum", "project__slug"]
    actions = ["retry"]
    readonly_fields = [
        "project",
        "queue",
        "gold_version",
        "format",
        "status",
        "progress_percent",
        "rows",
        "rows_per_split",
        "checksum",
        "size_bytes",
        "download",
        "manifest_pretty",
        "spec_pretty",
        "error",
        "attempts",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
    ]
    exclude = ["manifest", "spec", "file", "progress"]  # progress: shown as a percentage

    class Media:
        js = ("labeling/export_form.js",)

    # --- who ----------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Export]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(project__in=_readable_projects(request))

    def _reads(self, request: HttpRequest, obj: Export | None = None) -> bool:
        return has_project_role(request, READ_ROLES, obj.project_id if obj else None)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._reads(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._reads(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._reads(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an export is a record: create another one instead

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    # --- create ---------------------------------------------------------------------------

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs):
        if obj is None:
            kwargs["form"] = ExportCreateForm
            kwargs["fields"] = None
            kwargs["exclude"] = None
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None):
        if obj is not None:
            return super().get_fieldsets(request, obj)
        return [
            (None, {"fields": ["project", "queue", "format"]}),
            (
                "Split",
                {
                    "fields": [
                        "split_by",
                        "train",
                        "validation",
                        "test",
                        "split_key",
                        "seed",
                        "validation_from",
                        "test_from",
                    ]
                },
            ),
            (
                "Filter",
                {"fields": ["model_version", "completed_after", "completed_before", "segment"]},
            ),
            (
                "Content",
                {"fields": ["include_labels", "include_comments", "exclude_gold_from_train"]},
            ),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None):
        return self.readonly_fields if obj is not None else []

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "project" and not request.user.is_superuser:
            kwargs["queryset"] = _readable_projects(request)
        if db_field.name == "queue" and not request.user.is_superuser:
            kwargs["queryset"] = Queue.objects.filter(project__in=_readable_projects(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Export, form, change: bool) -> None:
        # The form was valid as a form; the service holds the rules. Its refusal is shown on
        # the form's own page by raising it as a form error in ``_changeform_view`` below.
        export = export_create(
            project=obj.project, request=export_request(form.request_data()), actor=request.user
        )
        obj.pk = export.pk
        obj.__dict__.update({k: v for k, v in export.__dict__.items() if not k.startswith("_")})

    def _changeform_view(self, request, object_id, form_url, extra_context):
        try:
            return super()._changeform_view(request, object_id, form_url, extra_context)
        except ServiceError as exc:
            self.message_user(
                request,
                "; ".join(f"{FORM_FIELDS.get(e.field, e.field)}: {e.detail}" for e in exc.errors),
                messages.ERROR,
            )
            return HttpResponseRedirect(request.get_full_path())

    # --- display ----------------------------------------------------------------------------

    @admin.display(description="progress")
    def progress_percent(self, obj: Export) -> str:
        return f"{obj.progress:.0%}"

    @admin.display(description="sha256")
    def short_checksum(self, obj: Export) -> str:
        return obj.checksum[:12] if obj.checksum else "-"

    @admin.display(description="file")
    def download(self, obj: Export) -> str:
        if obj.status != Export.Status.DONE:
            return "-"
        url = reverse("export-download", args=[obj.pk])
        manifest = reverse("export-manifest", args=[obj.pk])
        return format_html(
            '<a href="{}">download ({} bytes)</a> · <a href="{}">manifest (JSON)</a>',
            url,
            f"{obj.size_bytes:,}",
            manifest,
        )

    @admin.display(description="manifest")
    def manifest_pretty(self, obj: Export) -> str:
        return json_table(obj.manifest)

    @admin.display(description="request")
    def spec_pretty(self, obj: Export) -> str:
        return json_table(obj.spec)

    @admin.action(description="Retry the selected failed exports")
    def retry(self, request: HttpRequest, queryset: QuerySet[Export]) -> None:
        retried = 0
        for export in queryset.filter(status=Export.Status.FAILED):
            export_retry(export=export)
            retried += 1
        skipped = queryset.count() - retried
        self.message_user(
            request,
            f"{retried} export(s) queued again"
            + (f"; {skipped} skipped (only failed exports are retried)." if skipped else "."),
            messages.SUCCESS if retried else messages.WARNING,
        )


__all__ = ["ExportAdmin"]
