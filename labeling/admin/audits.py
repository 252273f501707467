"""The audit admin: a list of audits, a report page per audit, and two audits side by side.

Audits are read here, not made (the API and ``manage.py audit`` make them). Who sees them is
decided as in the API, by role rather than by Django permission: a superuser sees every
audit, a data scientist or project admin those of their projects (the role groups carry no
audit permission, and ``feedback`` never names labeling's newer models).

- The change page *is* the report: overall figures, a table sorted with the worst flagged
  segment first, the SVG chart (``labeling.audit_reports.chart_svg``: estimate bars, interval
  whiskers, the reference line, flagged bars in red), flagged segments, method and caveats, and
  download links to the CSV / JSON / Markdown reports of the API (which takes the session).
- ``compare/?a=<id>&b=<id>&metric=…`` puts two audits side by side, segment by segment, with
  the change in the figure; the list's action "Compare the two selected audits" opens it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from feedback.access import has_project_role

from ..audit_reports import (
    audits_compare,
    by_severity,
    chart_svg,
    interval,
    metric_name,
    metrics_of,
    pct,
    points,
)
from ..models import Audit
from ..selectors import READ_ROLES
from ..selectors.audits import audit_projects_for_user


@admin.register(Audit)
class AuditAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "project",
        "source_display",
        "model_version",
        "status",
        "rows",
        "flag_count",
        "created_at",
    )
    list_display_links = ("id", "source_display")
    list_filter = ("status", "project")
    list_select_related = ("project", "queue", "export", "gold_version__gold_set")
    search_fields = ("model_version",)
    date_hierarchy = "created_at"
    actions = ["compare_selected"]

    # -- who sees what --

    def _readable(self, request: HttpRequest) -> QuerySet:
        return audit_projects_for_user(user=request.user)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Audit]:
        queryset = super().get_queryset(request).select_related("requested_by")
        if request.user.is_superuser:
            return queryset
        return queryset.filter(project__in=self._readable(request))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_project_role(request, READ_ROLES)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_project_role(request, READ_ROLES, obj.project_id if obj else None)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    # -- list columns --

    @admin.display(description="source")
    def source_display(self, obj: Audit) -> str:
        if obj.gold_version_id is not None:
            version = obj.gold_version
            return f"gold {version.gold_set.slug} v{version.number}"
        if obj.export_id is not None:
            return f"export {obj.export_id}"
        if obj.queue_id is not None:
            return f"queue {obj.queue.name}"
        return "(deleted)"

    @admin.display(description="rows")
    def rows(self, obj: Audit) -> str:
        return "-" if not obj.result else f"{obj.result['overall']['n']:,}"

    @admin.display(description="flagged")
    def flag_count(self, obj: Audit) -> str:
        if not obj.result:
            return "-"
        flagged = {f["label"] for f in obj.result.get("flagged", [])}
        return (
            format_html('<strong style="color: #ba2121">{}</strong>', len(flagged))
            if flagged
            else "0"
        )

    # -- action --

    @admin.action(description="Compare the two selected audits")
    def compare_selected(self, request: HttpRequest, queryset: QuerySet[Audit]):
        ids = sorted(queryset.values_list("pk", flat=True))
        if len(ids) != 2:
            self.message_user(request, "Select exactly two audits to compare.", messages.WARNING)
            return None
        url = reverse("admin:labeling_audit_compare")
        return HttpResponseRedirect(f"{url}?a={ids[0]}&b={ids[1]}")

    # -- pages --

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "compare/",
                self.admin_site.admin_view(self.compare_view),
                name="labeling_audit_compare",
            ),
        ]
        # Before the stock patterns: their "<path:object_id>/" would swallow "compare/".
        return custom + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        audit = self.get_object(request, object_id)
        if audit is None or not self.has_view_permission(request, audit):
            raise Http404("No such audit of yours.")
        result = audit.result or {}
        names = metrics_of(result)
        metric = request.GET.get("metric", "error_rate")
        if metric not in names:
            metric = names[0] if names else "error_rate"
        segments = by_severity(result.get("segments") or [])
        rows = [_table_row(segment, metric) for segment in segments]
        overall = (result.get("overall") or {}).get("metrics") or {}
        context = {
            **self.admin_site.each_context(request),
            "title": f"Audit {audit.pk}: {result.get('scope', {}).get('source_label', '')}",
            "opts": self.opts,
            "original": audit,
            "audit": audit,
            "result": result,
            "metric": metric,
            "metric_label": metric_name(metric),
            "metric_choices": [(name, metric_name(name)) for name in names],
            "overall_rows": [
                {
                    "name": metric_name(name),
                    "value": pct(m.get("value")),
                    "interval": interval(m.get("ci_low"), m.get("ci_high")),
                    "n": m.get("n"),
                    "effective_n": m.get("effective_n"),
                }
                for name, m in overall.items()
            ],
            "rows": rows,
            "flagged": [
                {
                    **flag,
                    "metric_label": metric_name(flag["metric"]),
                    "value_text": pct(flag["value"]),
                    "interval": interval(flag["ci_low"], flag["ci_high"]),
                    "difference_text": points(flag["difference"]),
                    "reference_text": pct(flag["reference"]),
                }
                for flag in result.get("flagged") or []
            ],
            # chart_svg escapes every text it draws; the markup itself is ours.
            "chart": mark_safe(chart_svg(result, metric=metric)) if result else "",
            "report_urls": {
                kind: f"{reverse('audit-report', args=[audit.pk])}?format={kind}"
                for kind in ("md", "csv", "json")
            },
            "others": self.get_queryset(request)
            .filter(project_id=audit.project_id, status=Audit.Status.DONE)
            .exclude(pk=audit.pk)
            .order_by("-id")[:20],
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/labeling/audit/report.html", context)

    def compare_view(self, request: HttpRequest) -> HttpResponse:
        audits = []
        for name in ("a", "b"):
            value = request.GET.get(name, "")
            audit = self.get_queryset(request).filter(pk=value).first() if value.isdigit() else None
            if audit is None or audit.status != Audit.Status.DONE:
                raise Http404(f"No finished audit {value!r} of yours ({name}).")
            audits.append(audit)
        a, b = audits
        names = [n for n in metrics_of(a.result) if n in metrics_of(b.result)]
        metric = request.GET.get("metric", "error_rate")
        if metric not in names:
            metric = names[0] if names else "error_rate"
        comparison = audits_compare(a, b, metric=metric)
        rows = [
            {
                **row,
                "a_text": _value_text(row["a"]),
                "b_text": _value_text(row["b"]),
                "change_text": points(row["change"]),
                "change_interval": ""
                if row["change_ci_low"] is None
                else f"{points(row['change_ci_low'])} to {points(row['change_ci_high'])}",
                "real": row["change_ci_low"] is not None
                and (row["change_ci_low"] > 0 or row["change_ci_high"] < 0),
            }
            for row in comparison["rows"]
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Audits {a.pk} and {b.pk} side by side",
            "opts": self.opts,
            "a": a,
            "b": b,
            "metric": metric,
            "metric_label": metric_name(metric),
            "metric_choices": [(name, metric_name(name)) for name in names],
            "rows": rows,
            "comparison": comparison,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/labeling/audit/compare.html", context)


def _value_text(side: dict[str, Any]) -> str:
    if side.get("value") is None:
        return "insufficient" if side.get("n") else "-"
    text = f"{pct(side['value'])} ({interval(side['ci_low'], side['ci_high'])})"
    return text + (" ⚑" if side.get("flagged") else "")


def _table_row(segment: dict[str, Any], metric: str) -> dict[str, Any]:
    m = segment["metrics"].get(metric) or {}
    return {
        "label": segment["label"],
        "n": segment["n"],
        "effective_n": segment["effective_n"],
        "insufficient": segment["insufficient"],
        "flagged": segment["flagged"],
        "value": pct(m.get("value")),
        "interval": interval(m.get("ci_low"), m.get("ci_high")),
        "difference": points(m.get("difference")),
        "difference_interval": ""
        if m.get("difference_ci_low") is None
        else f"{points(m['difference_ci_low'])} to {points(m['difference_ci_high'])}",
        "ratio": "-" if m.get("ratio") is None else f"{m['ratio']:.2f}",
        "metric_flagged": bool(m.get("flagged")),
        "flags": ", ".join(metric_name(name) for name in segment["flags"]),
        "direction": m.get("direction") or "",
    }
