"""Admin: a project's webhook endpoints (secret shown once, by message) and their deliveries
(read-only, with the attempt log and a Redeliver action). Project admins only."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from feedback.errors import ServiceError
from feedback.services.events import EVENT_TYPES

from .models import Webhook, WebhookDelivery
from .selectors import projects_administered
from .services.dispatch import delivery_redeliver
from .services.endpoints import clean_events, clean_url, webhook_rotate_secret, webhook_test_send


def admin_project_ids(request: HttpRequest) -> set[int] | None:
    """Projects the person administers (None: every project, for a superuser); once per request."""
    if request.user.is_superuser:
        return None
    cached = getattr(request, "_redress_admin_project_ids", None)
    if cached is None:
        cached = set(projects_administered(user=request.user).values_list("pk", flat=True))
        request._redress_admin_project_ids = cached  # type: ignore[attr-defined]
    return cached


def _administers(request: HttpRequest, project_id: int | None = None) -> bool:
    if not (request.user.is_active and request.user.is_staff):
        return False
    allowed = admin_project_ids(request)
    if allowed is None:
        return True
    return project_id in allowed if project_id is not None else bool(allowed)


class WebhookForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=[("*", "* (every event)")] + [(e, e) for e in EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = Webhook
        fields = ["project", "url", "events", "format", "description", "active"]

    def _service_check(self, name: str, check, value):
        errors: list = []
        clean = check(value, errors)
        for error in errors:
            self.add_error(name, error.detail)
        return clean

    def clean_url(self):
        return self._service_check("url", clean_url, self.cleaned_data.get("url"))

    def clean_events(self):
        return self._service_check("events", clean_events, self.cleaned_data.get("events"))


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookForm
    list_display = ["id", "url", "project", "events_shown", "format", "active", "disabled_reason",
                    "created_at"]
    list_filter = ["active", "format", "project"]
    list_select_related = ["project"]
    search_fields = ["url", "description", "project__slug"]
    readonly_fields = ["disabled_at", "disabled_reason", "failing_since", "secret_rotated_at",
                       "created_at", "created_by"]
    actions = ["send_test", "rotate_secret"]

    @admin.display(description="events")
    def events_shown(self, obj: Webhook) -> str:
        return ", ".join(obj.events)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Webhook]:
        queryset = super().get_queryset(request)
        allowed = admin_project_ids(request)
        return queryset if allowed is None else queryset.filter(project_id__in=allowed)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "project" and not request.user.is_superuser:
            kwargs["queryset"] = projects_administered(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None):
        return [*self.readonly_fields, "project"] if obj is not None else self.readonly_fields

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _administers(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _administers(request, obj.project_id if obj else None)

    has_add_permission = has_module_permission
    has_change_permission = has_view_permission
    has_delete_permission = has_view_permission

    def save_model(self, request: HttpRequest, obj: Webhook, form, change: bool) -> None:
        if obj.active and obj.disabled_at is not None:  # reactivated by hand
            obj.disabled_at, obj.disabled_reason, obj.failing_since = None, "", None
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if not change:
            self.message_user(
                request,
                f"Signing secret of {obj.url} (copy it now, it is not shown again): {obj.secret}",
                messages.WARNING,
            )

    @admin.action(description="Send a test event (webhook.test)")
    def send_test(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for webhook in queryset[:20]:
            delivery = webhook_test_send(webhook=webhook, actor=request.user)
            if delivery.status == WebhookDelivery.Status.SUCCEEDED:
                self.message_user(request, f"{webhook.url}: delivered "
                                  f"(HTTP {delivery.last_response_status}).", messages.SUCCESS)
            else:
                self.message_user(request, f"{webhook.url}: failed, {delivery.last_error}; "
                                  "it will be retried.", messages.ERROR)

    @admin.action(description="Rotate the signing secret")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for webhook in queryset:
            webhook = webhook_rotate_secret(webhook=webhook)
            self.message_user(
                request,
                f"New secret of {webhook.url} (copy it now, it is not shown again): "
                f"{webhook.secret}",
                messages.WARNING,
            )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "webhook", "event_type", "event_uid", "status", "attempts",
                    "last_response_status", "next_attempt_at", "created_at"]
    list_filter = ["status", "event__type", "webhook__project"]
    list_select_related = ["webhook", "event"]
    search_fields = ["event__uid", "webhook__url"]
    actions = ["redeliver"]
    fields = ["webhook", "event_type", "event_uid", "status", "attempts", "last_response_status",
              "last_error", "next_attempt_at", "delivered_at", "created_at", "payload",
              "attempt_log"]
    readonly_fields = fields

    @admin.display(description="event")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.display(description="webhook-id")
    def event_uid(self, obj: WebhookDelivery) -> str:
        return obj.event.uid

    @admin.display(description="data")
    def payload(self, obj: WebhookDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.event.data, indent=2))

    @admin.display(description="attempts (oldest first)")
    def attempt_log(self, obj: WebhookDelivery) -> str:
        lines = [
            f"{entry['at']}  HTTP {entry['status'] or '—'}  {entry['duration_ms']} ms  "
            f"{entry['error']}"
            for entry in obj.log
        ]
        return format_html("<pre>{}</pre>", "\n".join(lines) or "no attempt yet")

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookDelivery]:
        queryset = super().get_queryset(request)
        allowed = admin_project_ids(request)
        return queryset if allowed is None else queryset.filter(webhook__project_id__in=allowed)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _administers(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _administers(request, obj.webhook.project_id if obj else None)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    @admin.action(description="Redeliver (same webhook-id)", permissions=["view"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        sent = refused = 0
        for delivery in queryset.select_related("webhook"):
            try:
                delivery_redeliver(delivery=delivery)
                sent += 1
            except ServiceError as exc:
                refused += 1
                self.message_user(request, f"Delivery {delivery.pk}: {exc.errors[0].detail}",
                                  messages.ERROR)
        if sent:
            self.message_user(request, f"{sent} delivery(ies) queued for redelivery.")
