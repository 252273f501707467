"""Monitoring in the admin: each project's monitoring page, its settings, its alert rules.

The page (``monitoringsettings/project/<slug>/``) answers what an on-call engineer asks:
what moved (rates per model version over time, with intervals; top categories this week
against last; the newest version against the one before), by how much and how sure
(differences with Newcombe intervals and p-values), since when (alert events with their
windows), and a link to the feedback behind each figure (the feedback changelist, filtered).
Who sees it: staff with any role in the project (rates, not rows), superusers everywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import Max, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from feedback.access import has_project_role, project_ids_for
from feedback.models import Membership, Project

from .charts import rate_chart_svg
from .metrics import METRICS, metric_compare, metric_series
from .models import AlertEvent, AlertRule, CategoryRollup, MetricRollup, MonitoringSettings
from .rollups import rollups_rebuild

ALL_ROLES = [r.value for r in Membership.Role]
ADMIN_ROLES = [Membership.Role.ADMIN.value]
NAMES = {
    "complaint_rate": "complaint rate",
    "dispute_rate": "dispute rate",
    "upheld_rate": "upheld-dispute share",
    "reviewer_error_rate": "reviewer-judged error rate",
}


def pct(value: float | None, digits: int = 2) -> str:
    return "\u2013" if value is None else f"{100 * value:.{digits}f}%"


def feedback_link(project: Project, **filters: str) -> str:
    query = {"project__id__exact": project.pk, **{k: v for k, v in filters.items() if v}}
    return reverse("admin:feedback_feedback_changelist") + "?" + urlencode(query)


def metric_link(project: Project, metric: str, version: str | None = None) -> str:
    filters: dict[str, str] = {"prediction__model_version": version or ""}
    if metric == "dispute_rate":
        filters["kind"] = "dispute"
    elif metric == "upheld_rate":
        filters.update(kind="dispute", status="upheld")
    elif metric == "complaint_rate":
        filters["kind"] = "report"
    elif metric.startswith("category_rate:"):
        filters["category"] = metric.split(":", 1)[1]
    return feedback_link(project, **filters)


@admin.register(MonitoringSettings)
class MonitoringSettingsAdmin(admin.ModelAdmin):
    list_display = ("project", "monitored_segment_keys", "page_link")
    list_select_related = ("project",)
    actions = ["rebuild"]

    def _projects(self, request: HttpRequest, roles=ALL_ROLES):
        ids = project_ids_for(request, roles)
        return Project.objects.all() if ids is None else Project.objects.filter(pk__in=ids)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(project__in=self._projects(request))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_project_role(request, ALL_ROLES)

    def has_view_permission(self, request, obj=None) -> bool:
        return has_project_role(request, ALL_ROLES, obj.project_id if obj else None)

    def has_add_permission(self, request) -> bool:
        return has_project_role(request, ADMIN_ROLES)

    def has_change_permission(self, request, obj=None) -> bool:
        return has_project_role(request, ADMIN_ROLES, obj.project_id if obj else None)

    has_delete_permission = has_change_permission

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "project":
            kwargs["queryset"] = self._projects(request, ADMIN_ROLES)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        keys = obj.monitored_segment_keys
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            obj.monitored_segment_keys = []
            messages.error(request, "Monitored segment keys: a JSON list of strings.")
        super().save_model(request, obj, form, change)
        if "monitored_segment_keys" in form.changed_data:
            rollups_rebuild(project_ids=[obj.project_id])
            messages.info(request, "The project's rollups were rebuilt for the new keys.")

    @admin.action(description="Rebuild the rollups of the selected projects")
    def rebuild(self, request, queryset):
        result = rollups_rebuild(project_ids=list(queryset.values_list("project_id", flat=True)))
        messages.info(request, f"Rebuilt {result['rows']} rollup rows.")

    @admin.display(description="monitoring page")
    def page_link(self, obj: MonitoringSettings) -> str:
        url = reverse("admin:monitoring_project", args=[obj.project.slug])
        return format_html('<a href="{}">Open</a>', url)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "project/<slug:slug>/",
                self.admin_site.admin_view(self.project_view),
                name="monitoring_project",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "project_pages": [
                (p.slug, reverse("admin:monitoring_project", args=[p.slug]))
                for p in self._projects(request)
            ],
        }
        return super().changelist_view(request, extra_context)

    def project_view(self, request: HttpRequest, slug: str) -> HttpResponse:
        project = Project.objects.filter(slug=slug).first()
        if project is None or not has_project_role(request, ALL_ROLES, project.pk):
            raise Http404("No such project of yours.")
        metric = request.GET.get("metric", "dispute_rate")
        if metric not in METRICS:
            metric = "dispute_rate"
        days = (
            max(2, min(int(request.GET.get("days", "14") or 14), 90))
            if (request.GET.get("days", "14").isdigit())
            else 14
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Monitoring: {project.slug}",
            "project": project,
            **page_context(project, metric=metric, days=days),
        }
        return TemplateResponse(request, "admin/monitoring/project.html", context)


def page_context(project: Project, *, metric: str, days: int, now=None) -> dict[str, Any]:
    now = now or timezone.now()
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - dt.timedelta(days=days - 1)
    end = today + dt.timedelta(days=1)
    versions = list(
        MetricRollup.objects.filter(project=project, segment_key="", hour__gte=start)
        .values("model_version")
        .annotate(last=Max("hour"), n=Sum("predictions"))
        .order_by("-last", "-n")
        .values_list("model_version", flat=True)
    )
    day_keys = [(start + dt.timedelta(days=i)).strftime("%Y-%m-%dT00:00:00Z") for i in range(days)]
    series = {}
    for version in versions[:6]:
        points = metric_series(
            project_id=project.pk,
            metric=metric,
            by="day",
            model_version=version,
            start=start,
            end=end,
        )["series"]
        series[version] = {p["key"]: p for p in points}
    chart = rate_chart_svg(
        f"{NAMES[metric]} per day, by model version (95% Wilson)", day_keys, series
    )

    # Canary (the newest version) against control (the one before), over the last 7 days.
    week = today + dt.timedelta(days=1) - dt.timedelta(days=7)
    comparison = []
    if len(versions) >= 2:
        b, a = versions[0], versions[1]
        for m in METRICS:
            c = metric_compare(project_id=project.pk, metric=m, a=a, b=b, start=week, end=end)
            comparison.append(
                {
                    "metric": NAMES[m],
                    "a": c["a"],
                    "b": c["b"],
                    "a_text": _rate_text(c["a"]),
                    "b_text": _rate_text(c["b"]),
                    "difference": _diff_text(c),
                    "p_value": c["p_value"],
                    "significant": c["p_value"] is not None and c["p_value"] < 0.05,
                    "link": metric_link(project, m, b),
                }
            )
        canary = {"a": a, "b": b}
    else:
        canary = None

    # Top categories, this week against last (per 1,000 predictions).
    def category_counts(s, e):
        return dict(
            CategoryRollup.objects.filter(project=project, segment_key="", hour__gte=s, hour__lt=e)
            .values("category")
            .annotate(n=Sum("feedback"))
            .values_list("category", "n")
        )

    def prediction_count(s, e):
        return (
            MetricRollup.objects.filter(
                project=project, segment_key="", hour__gte=s, hour__lt=e
            ).aggregate(n=Sum("predictions"))["n"]
            or 0
        )

    last_week = week - dt.timedelta(days=7)
    this, before = category_counts(week, end), category_counts(last_week, week)
    n_this, n_before = prediction_count(week, end), prediction_count(last_week, week)
    categories = []
    for slug in sorted(set(this) | set(before), key=lambda s: -(this.get(s, 0)))[:10]:
        r1 = this.get(slug, 0) / n_this if n_this else None
        r0 = before.get(slug, 0) / n_before if n_before else None
        categories.append(
            {
                "slug": slug,
                "this": this.get(slug, 0),
                "before": before.get(slug, 0),
                "rate_this": pct(r1),
                "rate_before": pct(r0),
                "change": "\u2013" if r1 is None or r0 is None else f"{100 * (r1 - r0):+.2f} pp",
                "up": r1 is not None and r0 is not None and r1 > r0,
                "link": feedback_link(project, category=slug),
            }
        )

    rules = list(AlertRule.objects.filter(project=project).order_by("-state", "name"))
    events = list(
        AlertEvent.objects.filter(rule__project=project)
        .select_related("rule")
        .order_by("-created_at", "-id")[:20]
    )
    event_rows = [
        {
            "event": e,
            "rule": e.rule,
            "value": pct(e.value),
            "interval": f"[{pct(e.ci_low)}, {pct(e.ci_high)}]",
            "baseline": pct(e.baseline_value),
            "p_value": "\u2013" if e.p_value is None else f"{e.p_value:.2g}",
            "link": metric_link(project, e.rule.metric, e.model_version or None),
        }
        for e in events
    ]
    rule_rows = [
        {
            "rule": r,
            "value": pct((r.last_result or {}).get("value")),
            "volume": (r.last_result or {}).get("volume"),
            "link": metric_link(
                project,
                r.metric,
                (r.filter or {}).get("model_version")
                if (r.filter or {}).get("model_version") != "latest"
                else None,
            ),
        }
        for r in rules
    ]
    return {
        "metric": metric,
        "metric_name": NAMES[metric],
        "metrics": NAMES,
        "days": days,
        "chart": mark_safe(chart),  # rate_chart_svg escapes every text it draws
        "versions": versions,
        "canary": canary,
        "comparison": comparison,
        "categories": categories,
        "n_this": n_this,
        "n_before": n_before,
        "rule_rows": rule_rows,
        "event_rows": event_rows,
        "chart_link": metric_link(project, metric),
    }


def _rate_text(rate: dict) -> str:
    return (
        f"{pct(rate['value'])} [{pct(rate['ci_low'])}, {pct(rate['ci_high'])}] "
        f"({rate['numerator']:g}/{rate['denominator']:g})"
    )


def _diff_text(c: dict) -> str:
    if c["difference"] is None:
        return "\u2013"
    return (
        f"{100 * c['difference']:+.2f} pp [{100 * c['difference_ci_low']:+.2f}, "
        f"{100 * c['difference_ci_high']:+.2f}]"
    )


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "project",
        "metric",
        "state",
        "state_since",
        "active",
        "last_evaluated_at",
    )
    list_filter = ("state", "active", ("project", admin.RelatedOnlyFieldListFilter))
    readonly_fields = ("state", "state_since", "last_evaluated_at", "last_result")
    list_select_related = ("project",)

    def get_queryset(self, request):
        ids = project_ids_for(request, ALL_ROLES)
        qs = super().get_queryset(request)
        return qs if ids is None else qs.filter(project_id__in=ids)

    def has_module_permission(self, request) -> bool:
        return has_project_role(request, ALL_ROLES)

    def has_view_permission(self, request, obj=None) -> bool:
        return has_project_role(request, ALL_ROLES, obj.project_id if obj else None)

    def has_add_permission(self, request) -> bool:
        return has_project_role(request, ADMIN_ROLES)

    def has_change_permission(self, request, obj=None) -> bool:
        return has_project_role(request, ADMIN_ROLES, obj.project_id if obj else None)

    has_delete_permission = has_change_permission
