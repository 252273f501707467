"""The intake admin: projects, their keys, members and taxonomy, predictions, feedback triage.

Thin on purpose: every write that carries a rule goes through ``feedback.services`` (keys are
created and revoked there, members granted there, disputes resolved there, taxonomy and
project edits drop cached key lookups there). This module adds presentation; who sees and
changes what is ``feedback.access`` (the one access model of the admin): a person sees the
rows of their projects, and writes only where their role carries the permission.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from .access import ProjectInlineMixin, ProjectScopedMixin, permission_name, projects_where
from .errors import ServiceError
from .models import (
    ApiKey,
    DisputeEvent,
    Feedback,
    FeedbackCategory,
    Membership,
    PersonalToken,
    Prediction,
    Project,
)
from .selectors import feedback_list, with_any_category
from .services.categories import category_save
from .services.disputes import dispute_resolve
from .services.feedback_tokens import clean_origins, token_secret_rotate
from .services.keys import apikey_create, apikey_revoke, project_cache_invalidate
from .services.projects import (
    membership_grant,
    membership_revoke,
    project_create,
    project_settings_changed,
)

# The resolve confirmation page pins the selected ids in hidden inputs; this keeps the form
# well under DATA_UPLOAD_MAX_NUMBER_FIELDS (1,000) and a resolution note meaningful.
RESOLVE_MAX_SELECTION = 500
# A refusal message lists at most this many reasons; the rest are counted.
MAX_REASONS_SHOWN = 20


# --- small display helpers -------------------------------------------------------------------


def adopt(target: models.Model, source: models.Model) -> None:
    """Make the admin's unsaved ``target`` the row a service created, so the admin's own
    bookkeeping (change log, success message, redirect) refers to that row."""
    for field in source._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    target._state.adding = False
    target._state.db = source._state.db


def pretty_json(value: Any) -> str:
    if value is None or value in ({}, []):
        return "-"
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


def counted(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def join_reasons(reasons: list[str]) -> str:
    shown = "; ".join(reasons[:MAX_REASONS_SHOWN])
    more = len(reasons) - MAX_REASONS_SHOWN
    return f"{shown}; and {more} more" if more > 0 else shown


# --- projects, members, taxonomy -------------------------------------------------------------


class FeedbackCategoryForm(forms.ModelForm):
    class Meta:
        model = FeedbackCategory
        fields = ["project", "slug", "name", "description", "active", "position"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 50})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and "slug" in self.fields:
            # Apps send slugs; renaming one would break every client that knows it. Retire an
            # entry by deactivating it and add a new one instead.
            self.fields["slug"].disabled = True


class FeedbackCategoryInline(ProjectInlineMixin, admin.TabularInline):
    model = FeedbackCategory
    form = FeedbackCategoryForm
    fields = ("slug", "name", "description", "active", "position")
    extra = 0
    # Deleting an entry would strip it from stored feedback; deactivate it instead.
    can_delete = False
    show_change_link = True


class MembershipInline(ProjectInlineMixin, admin.TabularInline):
    """Members of the project: change a role or remove someone here; add people on the
    Memberships page (one user picker there instead of a full user list per row here)."""

    model = Membership
    fields = ("user", "role", "created_at")
    readonly_fields = ("user", "created_at")
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user")

    def has_add_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return False


class OriginsField(forms.CharField):
    """A project's allowed origins, one per line (stored as a list, checked by the service's
    ``clean_origins``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "cols": 60}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(value)
        if isinstance(value, str) and value.startswith("["):  # the model field's JSON text
            try:
                return "\n".join(json.loads(value))
            except ValueError:
                return value
        return value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value) or ""
        origins = [line.strip() for line in text.splitlines() if line.strip()]
        try:
            return clean_origins(origins)
        except ServiceError as exc:
            raise forms.ValidationError([error.detail for error in exc.errors]) from exc


class ProjectForm(forms.ModelForm):
    allowed_origins = OriginsField(
        required=False,
        help_text="One origin per line (https://app.example.com): pages there may embed the "
        "feedback widget. CORS applies to the feedback-token endpoints only.",
    )

    class Meta:
        model = Project
        fields = ["slug", "name", "description", "scrub_pii", "allowed_origins"]


@admin.register(Project)
class ProjectAdmin(ProjectScopedMixin, admin.ModelAdmin):
    project_lookup = "pk"
    form = ProjectForm
    list_display = ("slug", "name", "scrub_pii", "created_at")
    search_fields = ("slug", "name")
    inlines = [FeedbackCategoryInline, MembershipInline]
    actions = ["rotate_token_secret"]
    token_fields = ["token_secret_rotated_at", "token_secret_previous_until"]

    def get_fields(self, request: HttpRequest, obj: Project | None = None) -> list[str]:
        if obj is None:
            return ["slug", "name", "description"]  # what project_create takes
        return [
            "slug", "name", "description", "scrub_pii", "allowed_origins", *self.token_fields,
            "created_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Project | None = None) -> list[str]:
        # The slug names the project in API calls, commands and export manifests. The token
        # secret is never shown here: the rotate action shows a new one, once.
        return ["slug", *self.token_fields, "created_at"] if obj is not None else []

    @admin.action(
        description="Rotate the browser token secret (old tokens stop working)",
        permissions=["change"],
    )
    def rotate_token_secret(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        writable = set(
            projects_where(request, permission_name(self.opts, "change")).values_list(
                "pk", flat=True
            )
        )
        for project in queryset.order_by("pk"):
            if project.pk not in writable:
                self.message_user(
                    request, f"Refused: you may not change {project.slug}.", messages.WARNING
                )
                continue
            secret = token_secret_rotate(project=project)
            # The secret exists in clear only in this message (and the app's server).
            self.message_user(
                request,
                f"New token secret for {project.slug}; copy it now, it will not be shown "
                f"again. Tokens signed with the previous one are refused: {secret}",
                messages.WARNING,
            )

    def get_inlines(self, request: HttpRequest, obj: Project | None) -> list[type]:
        # project_create brings the default taxonomy; taxonomy and members are edited after.
        return list(self.inlines) if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Project, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        project = project_create(
            slug=data["slug"], name=data["name"], description=data.get("description", "")
        )
        adopt(obj, project)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is FeedbackCategory:
            for category in formset.save(commit=False):
                category_save(category=category)
        elif formset.model is Membership:
            for membership in formset.save(commit=False):
                # The service keeps the role's group (the person's permissions) in step.
                membership_grant(
                    project=form.instance,
                    username=membership.user.get_username(),
                    role=membership.role,
                    actor=request.user,
                )
            for membership in formset.deleted_objects:
                # The service also drops the role's group the person no longer needs.
                membership_revoke(
                    project=form.instance,
                    username=membership.user.get_username(),
                    actor=request.user,
                )
        else:
            super().save_formset(request, form, formset, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change:
            # Cached key lookups carry the project's settings (scrub_pii) and its taxonomy.
            project_settings_changed(project=form.instance)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting a project deletes its feedback, predictions and keys (the admins of those
        # refuse deletion anyway, so the delete page could only say "not allowed"). Such an
        # erasure deserves a deliberate, reviewed step outside the admin.
        return False


@admin.register(Membership)
class MembershipAdmin(ProjectScopedMixin, admin.ModelAdmin):
    list_display = ("user", "project", "role", "created_at")
    list_filter = ("role", ("project", admin.RelatedOnlyFieldListFilter))
    search_fields = ("user__username", "project__slug")
    list_select_related = ("user", "project")

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> list[str]:
        # A membership is a (project, person) pair; only the role changes.
        return ["project", "user", "created_at"] if obj is not None else ["created_at"]

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        # The service also puts the person in the role's group and makes them staff.
        membership = membership_grant(
            project=obj.project,
            username=obj.user.get_username(),
            role=obj.role,
            actor=request.user,
        )
        adopt(obj, membership)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        # The service takes the role's group (its permissions) away with the membership.
        membership_revoke(project=obj.project, username=obj.user.get_username(), actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        # "Delete selected": the same service, one membership at a time. The stock action has
        # already checked delete permission per object (ProjectScopedMixin), so every row here
        # is in a project where the person may remove members.
        for membership in queryset.select_related("project", "user").order_by("pk"):
            membership_revoke(
                project=membership.project,
                username=membership.user.get_username(),
                actor=request.user,
            )


@admin.register(FeedbackCategory)
class FeedbackCategoryAdmin(ProjectScopedMixin, admin.ModelAdmin):
    form = FeedbackCategoryForm
    list_display = ("slug", "name", "project", "active", "position")
    list_filter = (("project", admin.RelatedOnlyFieldListFilter), "active")
    search_fields = ("slug", "name")
    list_select_related = ("project",)
    ordering = ("project__slug", "position", "slug")

    def get_readonly_fields(
        self, request: HttpRequest, obj: FeedbackCategory | None = None
    ) -> list[str]:
        # Feedback stores slugs (Feedback.categories): a slug never changes once created.
        return ["project", "slug"] if obj is not None else []

    def save_model(
        self, request: HttpRequest, obj: FeedbackCategory, form: Any, change: bool
    ) -> None:
        category_save(category=obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting an entry would strip it from stored feedback; deactivate it instead.
        return False


# --- API keys --------------------------------------------------------------------------------


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="ingest: log predictions and submit feedback; data: read feedback and data.",
    )

    class Meta:
        model = ApiKey
        fields = ["project", "name", "scopes"]

    def clean_scopes(self) -> list[str]:
        return sorted(self.cleaned_data["scopes"])


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(ProjectScopedMixin, admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "prefix",
        "name",
        "project",
        "scope_list",
        "is_active",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    )
    list_filter = (("project", admin.RelatedOnlyFieldListFilter), KeyStatusFilter)
    search_fields = ("name", "prefix")
    list_select_related = ("project", "created_by")
    actions = ["revoke_keys"]
    audit_fields = ["prefix", "key_hash", "created_at", "created_by", "last_used_at", "revoked_at"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return ["project", "name", "scopes"]
        return ["project", "name", "scopes", *self.audit_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # The hash and the audit trail are never edited; a key never moves between projects.
        return ["project", *self.audit_fields] if obj is not None else []

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="active", boolean=True)
    def is_active(self, obj: ApiKey) -> bool:
        return obj.is_active

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            # The cached key lookup carries the scopes; drop it so a change applies at once.
            project_cache_invalidate(project_id=obj.project_id)
            return
        data = form.cleaned_data
        key, raw = apikey_create(
            project=data["project"], scopes=data["scopes"], name=data["name"], actor=request.user
        )
        adopt(obj, key)
        # The raw key exists only in this one message: the database keeps its hash.
        self.message_user(
            request,
            f"Copy the new API key now; it will not be shown again: {raw}",
            messages.WARNING,
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Revoke instead: a deleted key's cached lookup would outlive it, and the row is the
        # record of who created the key and when it was last used.
        return False

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        writable = set(
            projects_where(request, permission_name(self.opts, "change")).values_list(
                "pk", flat=True
            )
        )
        revoked, already, refused = 0, 0, []
        for key in queryset.select_related("project").order_by("pk"):
            if key.project_id not in writable:
                refused.append(f"{key.prefix}…: you may not manage keys of {key.project.slug}")
            elif key.revoked_at is not None:
                already += 1
            else:
                apikey_revoke(key=key)
                revoked += 1
        if revoked:
            self.message_user(request, f"Revoked {counted(revoked, 'key')}.", messages.SUCCESS)
        if already:
            self.message_user(
                request,
                f"{counted(already, 'key')} already revoked, left as they were.",
                messages.INFO,
            )
        if refused:
            self.message_user(
                request, f"Refused {len(refused)}: {join_reasons(refused)}.", messages.WARNING
            )


# --- personal API tokens ---------------------------------------------------------------------


@admin.register(PersonalToken)
class PersonalTokenAdmin(admin.ModelAdmin):
    """People's API tokens, for superusers: who has one, its first characters and when it was
    made. Only the hash is stored, so no page can show a token; ``manage.py drf_create_token``
    prints a new one once. Deleting a row revokes that token at once."""

    list_display = ("user", "prefix_shown", "created_at")
    search_fields = ("user__username", "prefix")
    list_select_related = ("user",)
    fields = ("user", "prefix_shown", "created_at")
    readonly_fields = fields

    @admin.display(description="token")
    def prefix_shown(self, obj: PersonalToken) -> str:
        return f"{obj.prefix}…"

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made by drf_create_token, which shows the token once

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser


# --- predictions -----------------------------------------------------------------------------


@admin.register(Prediction)
class PredictionAdmin(ProjectScopedMixin, admin.ModelAdmin):
    """Read-only: predictions are logged by the apps and are the lineage of every label."""

    list_display = (
        "external_id",
        "project",
        "model",
        "model_version",
        "label",
        "confidence",
        "occurred_at",
    )
    list_filter = ("model_version", ("project", admin.RelatedOnlyFieldListFilter), "occurred_at")
    search_fields = ("external_id",)
    list_select_related = ("project",)
    # The full count is a second COUNT(*) over the whole table on every page; skip it.
    show_full_result_count = False
    fields = (
        "project",
        "external_id",
        "model",
        "model_version",
        "label",
        "confidence",
        "occurred_at",
        "created_at",
        "input_json",
        "output_json",
        "segment_json",
    )
    readonly_fields = fields

    @admin.display(description="input")
    def input_json(self, obj: Prediction) -> str:
        return pretty_json(obj.input)

    @admin.display(description="output")
    def output_json(self, obj: Prediction) -> str:
        return pretty_json(obj.output)

    @admin.display(description="segment")
    def segment_json(self, obj: Prediction) -> str:
        return pretty_json(obj.segment)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- feedback triage -------------------------------------------------------------------------


class CategoryFilter(admin.SimpleListFilter):
    """By category slug, offered from the person's projects only (the stock related-field
    filter would list every project's categories)."""

    title = "category"
    parameter_name = "category"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        slugs = (
            FeedbackCategory.objects.filter(project__in=projects_where(request))
            .order_by("slug")
            .values_list("slug", flat=True)
            .distinct()
        )
        return [(slug, slug) for slug in slugs]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Feedback]) -> QuerySet[Feedback]:
        if self.value():
            return queryset.filter(with_any_category([self.value()]))
        return queryset


DISPUTE_OPEN = (Feedback.DisputeStatus.OPEN, Feedback.DisputeStatus.IN_REVIEW)
# A list cell kept to one line: the triage list fits 1440 px whatever users write.
ONE_LINE_STYLE = (
    "display: inline-block; max-width: {width}; overflow: hidden; white-space: nowrap; "
    "text-overflow: ellipsis; vertical-align: bottom"
)


class ResolutionForm(forms.Form):
    note = forms.CharField(
        label="Resolution note",
        widget=forms.Textarea(attrs={"rows": 5, "cols": 80}),
        help_text="Stored with every selected dispute and shown to the app's user; say why.",
    )


class DisputeEventInline(admin.TabularInline):
    """The dispute's history, read-only."""

    model = DisputeEvent
    fields = ("created_at", "from_status", "to_status", "actor", "note")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[DisputeEvent]:
        return super().get_queryset(request).select_related("actor")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The history belongs to the feedback: whoever may see the feedback sees it (the role
        # groups carry no DisputeEvent permissions).
        return request.user.has_perm("feedback.view_feedback") or request.user.has_perm(
            "feedback.change_feedback"
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Feedback)
class FeedbackAdmin(ProjectScopedMixin, admin.ModelAdmin):
    """Triage. Read-only except through the actions, which call the dispute service."""

    list_display = (
        "id",
        "kind",
        "rating_shown",
        "status",
        "category_slugs",
        "short_comment",
        "prediction_link",
        "model_version",
        "project",
        "created_short",
    )
    list_filter = (
        "kind",
        "status",
        "origin",  # the app's server (key) or the end user's browser (token)
        CategoryFilter,
        "prediction__model_version",
        ("project", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    search_fields = ("comment", "prediction__external_id")
    list_select_related = ("prediction", "project")
    show_full_result_count = False
    ordering = ("-id",)
    actions = ["resolve_upheld", "resolve_rejected"]
    inlines = [DisputeEventInline]
    feedback_fields = (
        "project",
        "kind",
        "rating",
        "category_slugs",
        "comment",
        "correction_json",
        "segment_json",
        "end_user",
        "idempotency_key",
        "created_at",
    )
    prediction_fields = (
        "prediction_link",
        "model_version",
        "prediction_input",
        "prediction_output",
    )
    dispute_fields = ("status", "resolution_note", "resolved_at", "resolved_by")
    readonly_fields = feedback_fields + prediction_fields + dispute_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Feedback]:
        # The selector scopes to the projects and joins the prediction (no N+1).
        queryset = feedback_list(project_ids=projects_where(request).values("pk"))
        # The prediction's payloads can be large and the list never shows them.
        return queryset.defer("prediction__input", "prediction__output")

    def get_fieldsets(self, request: HttpRequest, obj: Feedback | None = None) -> list:
        fieldsets: list = [
            (None, {"fields": self.feedback_fields}),
            ("Prediction", {"fields": self.prediction_fields}),
        ]
        if obj is not None and obj.kind == Feedback.Kind.DISPUTE:
            fieldsets.append(("Dispute", {"fields": self.dispute_fields}))
        return fieldsets

    def get_inlines(self, request: HttpRequest, obj: Feedback | None) -> list[type]:
        return list(self.inlines) if obj is not None and obj.kind == Feedback.Kind.DISPUTE else []

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        # Ten columns and the filters need the width: the app list is one click away (Home).
        extra = {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        return super().changelist_view(request, extra)

    def get_urls(self) -> list[URLPattern]:
        resolve = path(
            "<int:feedback_id>/resolve/",
            self.admin_site.admin_view(self.resolve_view),
            name="feedback_feedback_resolve",
        )
        return [resolve, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        resolvable = (
            obj is not None
            and obj.kind == Feedback.Kind.DISPUTE
            and obj.status in DISPUTE_OPEN
            and self._may_resolve(request, obj)
        )
        extra = {
            **(extra_context or {}),
            "resolve_form": ResolutionForm() if resolvable else None,
            "resolve_url": reverse("admin:feedback_feedback_resolve", args=[obj.pk])
            if resolvable
            else "",
        }
        return super().change_view(request, object_id, form_url, extra)

    def resolve_view(self, request: HttpRequest, feedback_id: int) -> HttpResponse:
        """The dispute page's "Resolve" buttons: the same service as the list's actions."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        dispute = self.get_object(request, str(feedback_id))
        if dispute is None:
            raise Http404(f"No feedback {feedback_id} of yours.")
        back = reverse("admin:feedback_feedback_change", args=[dispute.pk])
        if not self._may_resolve(request, dispute):
            raise PermissionDenied("You may not resolve disputes of this project.")
        form = ResolutionForm(request.POST)
        upheld = request.POST.get("upheld")
        if upheld not in ("1", "0") or not form.is_valid():
            self.message_user(
                request, "Write a resolution note, then press Upheld or Rejected.", messages.ERROR
            )
            return HttpResponseRedirect(back)
        try:
            dispute_resolve(
                dispute_id=dispute.pk,
                upheld=upheld == "1",
                note=form.cleaned_data["note"],
                actor=request.user,
            )
        except ServiceError as exc:
            self.message_user(request, " ".join(e.detail for e in exc.errors), messages.WARNING)
        else:
            verdict = "upheld" if upheld == "1" else "rejected"
            self.message_user(request, f"Resolved dispute {dispute.pk} as {verdict}.")
        return HttpResponseRedirect(back)

    def _may_resolve(self, request: HttpRequest, dispute: Feedback) -> bool:
        return (
            projects_where(request, permission_name(self.opts, "change"))
            .filter(pk=dispute.project_id)
            .exists()
        )

    # Read-only: the change page is a view; "change" on the model is what the actions need.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a submission is never lost

    # -- columns --

    @admin.display(description="categories")
    def category_slugs(self, obj: Feedback) -> str:
        return ", ".join(obj.categories or []) or "-"

    @admin.display(description="created", ordering="created_at")
    def created_short(self, obj: Feedback) -> str:
        # "2026-12-06 03:39" on one line, where Django's "Dec. 6, 2026, 3:39 a.m." took two.
        return format_html(
            '<span style="white-space: nowrap">{}</span>',
            timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M"),
        )

    @admin.display(description="rating", ordering="rating")
    def rating_shown(self, obj: Feedback) -> str:
        if obj.rating is None:
            return "-"
        return format_html(
            '<span class="triage-rating" style="color: {}; font-weight: 600">{}</span>',
            "#2e7d32" if obj.rating > 0 else "#c62828" if obj.rating < 0 else "inherit",
            f"+{obj.rating}"
            if obj.rating > 0
            else f"\N{MINUS SIGN}{-obj.rating}"
            if obj.rating < 0
            else "0",
        )

    @admin.display(description="comment", ordering="comment")
    def short_comment(self, obj: Feedback) -> str:
        # One line, cut with an ellipsis; the whole comment is the tooltip.
        if not obj.comment:
            return "-"
        return format_html(
            '<span class="triage-one-line" title="{}" style="{}">{}</span>',
            obj.comment,
            ONE_LINE_STYLE.format(width="20em"),
            Truncator(" ".join(obj.comment.split())).chars(120),
        )

    @admin.display(description="prediction", ordering="prediction__external_id")
    def prediction_link(self, obj: Feedback) -> str:
        url = reverse("admin:feedback_prediction_change", args=[obj.prediction_id])
        return format_html(
            '<a href="{}" title="{}" style="{}">{}</a>',
            url,
            obj.prediction.external_id,
            ONE_LINE_STYLE.format(width="12em"),
            obj.prediction.external_id,
        )

    @admin.display(description="model version", ordering="prediction__model_version")
    def model_version(self, obj: Feedback) -> str:
        return obj.prediction.model_version or "-"

    @admin.display(description="model input")
    def prediction_input(self, obj: Feedback) -> str:
        return pretty_json(obj.prediction.input)

    @admin.display(description="model output")
    def prediction_output(self, obj: Feedback) -> str:
        return pretty_json(obj.prediction.output)

    @admin.display(description="correction")
    def correction_json(self, obj: Feedback) -> str:
        return pretty_json(obj.correction)

    @admin.display(description="segment")
    def segment_json(self, obj: Feedback) -> str:
        return pretty_json(obj.segment)

    # -- actions --

    @admin.action(description="Resolve selected disputes as upheld", permissions=["change"])
    def resolve_upheld(
        self, request: HttpRequest, queryset: QuerySet[Feedback]
    ) -> HttpResponse | None:
        return self._resolve(request, queryset, upheld=True, action="resolve_upheld")

    @admin.action(description="Resolve selected disputes as rejected", permissions=["change"])
    def resolve_rejected(
        self, request: HttpRequest, queryset: QuerySet[Feedback]
    ) -> HttpResponse | None:
        return self._resolve(request, queryset, upheld=False, action="resolve_rejected")

    def _resolve(
        self, request: HttpRequest, queryset: QuerySet[Feedback], *, upheld: bool, action: str
    ) -> HttpResponse | None:
        """First POST: the confirmation page asking for the note. Second POST (``post=yes``):
        resolve each dispute through the service and report. ``None`` returns to the list."""
        items = list(queryset.order_by("pk")[: RESOLVE_MAX_SELECTION + 1])
        if len(items) > RESOLVE_MAX_SELECTION:
            self.message_user(
                request,
                f"Select at most {RESOLVE_MAX_SELECTION} items at a time; nothing was resolved.",
                messages.ERROR,
            )
            return None
        disputes = [item for item in items if item.kind == Feedback.Kind.DISPUTE]
        skipped = [item for item in items if item.kind != Feedback.Kind.DISPUTE]
        if not disputes:
            self.message_user(
                request,
                f"No disputes among the selected items; skipped {counted(len(skipped), 'item')}.",
                messages.WARNING,
            )
            return None

        confirmed = request.POST.get("post") == "yes"
        form = ResolutionForm(request.POST if confirmed else None)
        if confirmed and form.is_valid():
            self._resolve_each(request, disputes, upheld=upheld, note=form.cleaned_data["note"])
            self._report_skipped(request, items, skipped)
            return None

        verdict = "upheld" if upheld else "rejected"
        context = {
            **self.admin_site.each_context(request),
            "title": f"Resolve disputes as {verdict}",
            "opts": self.opts,
            "action": action,
            "verdict": verdict,
            "disputes": disputes,
            "skipped": skipped,
            "selected_pks": [item.pk for item in items],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "form": form,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/feedback/feedback/resolve_disputes.html", context)

    def _resolve_each(
        self, request: HttpRequest, disputes: list[Feedback], *, upheld: bool, note: str
    ) -> None:
        writable = set(
            projects_where(request, permission_name(self.opts, "change"))
            .filter(pk__in={dispute.project_id for dispute in disputes})
            .values_list("pk", flat=True)
        )
        resolved, refused = 0, []
        for dispute in disputes:
            if dispute.project_id not in writable:
                refused.append(
                    f"#{dispute.pk}: you may not resolve disputes of {dispute.project.slug}"
                )
                continue
            try:
                # One transaction per dispute: a refusal never undoes the others.
                dispute_resolve(dispute_id=dispute.pk, upheld=upheld, note=note, actor=request.user)
            except ServiceError as exc:
                refused.append(f"#{dispute.pk}: {' '.join(e.detail for e in exc.errors)}")
            else:
                resolved += 1
        verdict = "upheld" if upheld else "rejected"
        if resolved:
            self.message_user(
                request, f"Resolved {counted(resolved, 'dispute')} as {verdict}.", messages.SUCCESS
            )
        if refused:
            self.message_user(
                request, f"Refused {len(refused)}: {join_reasons(refused)}", messages.WARNING
            )

    def _report_skipped(
        self, request: HttpRequest, items: list[Feedback], skipped: list[Feedback]
    ) -> None:
        if skipped:
            ids = ", ".join(f"#{item.pk}" for item in skipped[:MAX_REASONS_SHOWN])
            more = " …" if len(skipped) > MAX_REASONS_SHOWN else ""
            self.message_user(
                request,
                f"Skipped {counted(len(skipped), 'item')} (not disputes): {ids}{more}.",
                messages.INFO,
            )
        # Ids pinned on the confirmation page that the (filtered) list no longer holds, e.g. a
        # dispute someone else resolved under a status=open filter: say so, never drop silently.
        listed = {str(item.pk) for item in items}
        pinned = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        missing = [pk for pk in pinned if pk not in listed]
        if missing:
            self.message_user(
                request,
                f"{counted(len(missing), 'selected item')} no longer in this list (changed, or "
                f"not visible to you), left alone: "
                f"{', '.join('#' + pk for pk in missing[:MAX_REASONS_SHOWN])}.",
                messages.WARNING,
            )
