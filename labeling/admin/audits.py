"""The audit admin: a list of audits, a report page per audit, and two audits side by side.

Audits are read here and made here ("Add audit": a form calling the same ``audit_create`` as
the API and ``manage.py audit``, whose refusals it shows beside the form). Who sees them is
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

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from feedback.access import has_project_role
from feedback.errors import ServiceError
from feedback.selectors import projects_for_user

from ..audit_reports import (
    audits_compare,
    by_severity,
    chart_svg,
    flags_text,
    interval,
    metric_name,
    metrics_of,
    pct,
    points,
)
from ..models import Audit, Export, GoldSetVersion, Queue
from ..payloads.audits import audit_request
from ..selectors import READ_ROLES
from ..selectors.audits import audit_projects_for_user
from ..services.audits import audit_create


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
        return has_project_role(request, READ_ROLES)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        return self.create_view(request)

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
                "run/",
                self.admin_site.admin_view(self.create_view),
                name="labeling_audit_create",
            ),
            path(
                "compare/",
                self.admin_site.admin_view(self.compare_view),
                name="labeling_audit_compare",
            ),
        ]
        # Before the stock patterns: their "<path:object_id>/" would swallow "compare/".
        return custom + super().get_urls()

    def create_view(self, request: HttpRequest) -> HttpResponse:
        """Run an audit: the API's request as a form, checked by the API's declaration
        (``audit_request``) and run by ``audit_create``."""
        projects = projects_for_user(user=request.user, roles=READ_ROLES)
        if request.user.is_superuser:
            from feedback.models import Project

            projects = Project.objects.all()
        form = AuditCreateForm(request.POST or None, projects=projects)
        if request.method == "POST" and form.is_valid():
            project, data = form.request_data()
            try:
                sent = audit_request({"project": project.slug, **data})
                audit = audit_create(project=project, request=sent, actor=request.user)
            except ServiceError as exc:
                for error in exc.errors:
                    form.add_error(AUDIT_FORM_FIELDS.get(_root(error.field)), error.detail)
            else:
                state = {
                    Audit.Status.DONE: "computed",
                    Audit.Status.FAILED: "failed",
                }.get(audit.status, "queued for a worker (this page shows its progress)")
                self.message_user(
                    request,
                    f"Audit {audit.pk} {state}.",
                    messages.ERROR if audit.status == Audit.Status.FAILED else messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:labeling_audit_change", args=[audit.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Run an audit",
            "opts": self.opts,
            "form": form,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/labeling/audit/create.html", context)

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


# The service's field names, and the form field that shows each one's refusal.
AUDIT_FORM_FIELDS = {
    "source": "source",
    "segments": "segments",
    "intersectional": "intersectional",
    "positive_label": "positive_label",
    "reference": "reference",
    "min_n": "min_n",
    "tolerance": "tolerance",
    "confidence": "confidence",
    "weighted": "weighted",
    "model_version": "model_version",
}


def _root(field: str | None) -> str:
    """``source.model_version`` -> ``model_version``; ``segments[2]`` -> ``segments``."""
    name = (field or "").split("[", 1)[0]
    if name.startswith("source."):
        name = name.split(".", 1)[1]
        return name if name == "model_version" else "source"
    return name


class AuditCreateForm(forms.Form):
    """An audit request (POST /api/v1/audits) as a form. The source names its project."""

    source = forms.ChoiceField(
        help_text="What to audit: a queue's completed reviews, an export's rows, or a published "
        "gold set scored against a model version."
    )
    model_version = forms.CharField(
        required=False,
        help_text="Only this model version's predictions (required for a gold set: the version "
        "scored against it).",
    )
    segments = forms.CharField(
        initial="locale",
        help_text="Segment keys, comma-separated, e.g. <code>locale, age_band</code> (at most 5).",
    )
    intersectional = forms.BooleanField(
        required=False,
        help_text="Also every combination of the keys (locale and age_band together).",
    )
    positive_label = forms.CharField(
        required=False,
        help_text="For a queue with label choices: the favourable label, for selection rate, "
        "false positive and false negative rates.",
    )
    reference = forms.CharField(
        initial="overall",
        help_text='<code>overall</code>, or a segment as JSON, e.g. {"locale": "en-US"}.',
    )
    min_n = forms.IntegerField(initial=30, min_value=1, label="Minimum rows per segment")
    tolerance = forms.FloatField(
        initial=0.05, min_value=0, max_value=1, help_text="Smallest difference worth a flag."
    )
    confidence = forms.FloatField(initial=0.95, min_value=0.5, max_value=0.999)
    weighted = forms.BooleanField(
        required=False, initial=True, help_text="Weight rows by 1/π (the sampling design)."
    )

    def __init__(self, *args: Any, projects: QuerySet, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.projects = {p.pk: p for p in projects}
        ids = list(self.projects)
        choices: list[tuple[str, Any]] = [("", "---------")]
        queues = Queue.objects.filter(project_id__in=ids).select_related("project")
        choices.append(
            ("Queues", [(f"queue:{q.pk}", f"{q.project.slug} / {q.name}") for q in queues])
        )
        exports = Export.objects.filter(project_id__in=ids, status=Export.Status.DONE)
        choices.append(
            (
                "Exports",
                [
                    (f"export:{e.pk}", f"{e.project.slug} / export {e.pk} ({e.rows:,} rows)")
                    for e in exports.select_related("project").order_by("-pk")[:50]
                ],
            )
        )
        versions = GoldSetVersion.objects.filter(
            gold_set__project_id__in=ids, status=GoldSetVersion.Status.PUBLISHED
        ).select_related("gold_set__project")
        choices.append(
            (
                "Gold sets",
                [
                    (
                        f"gold:{v.pk}",
                        f"{v.gold_set.project.slug} / gold {v.gold_set.slug} v{v.number}",
                    )
                    for v in versions.order_by("gold_set__slug", "-number")
                ],
            )
        )
        self.fields["source"].choices = choices

    def clean_reference(self) -> Any:
        text = self.cleaned_data["reference"].strip()
        if text in ("", "overall"):
            return "overall"
        try:
            value = json.loads(text)
        except ValueError:
            raise forms.ValidationError('"overall", or JSON such as {"locale": "en-US"}.') from None
        return value

    def request_data(self) -> tuple[Any, dict[str, Any]]:
        """The project and the API's request body."""
        data = self.cleaned_data
        kind, _, pk = data["source"].partition(":")
        source: dict[str, Any]
        if kind == "queue":
            obj = Queue.objects.get(pk=pk)
            project_id, source = obj.project_id, {"queue": obj.pk}
        elif kind == "export":
            obj = Export.objects.get(pk=pk)
            project_id, source = obj.project_id, {"export": obj.pk}
        else:
            obj = GoldSetVersion.objects.select_related("gold_set").get(pk=pk)
            project_id = obj.gold_set.project_id
            source = {"goldset": obj.gold_set.slug, "version": obj.number}
        if data.get("model_version") or kind == "gold":
            source["model_version"] = data.get("model_version") or ""
        body = {
            "source": source,
            "segments": [k.strip() for k in data["segments"].split(",") if k.strip()],
            "intersectional": data["intersectional"],
            "positive_label": data.get("positive_label") or None,
            "reference": data["reference"],
            "min_n": data["min_n"],
            "tolerance": data["tolerance"],
            "confidence": data["confidence"],
            "weighted": data["weighted"],
        }
        return self.projects[project_id], body


def _value_text(side: dict[str, Any]) -> str:
    if side.get("value") is None:
        return "insufficient" if side.get("n") else "-"
    text = f"{pct(side['value'])} ({interval(side['ci_low'], side['ci_high'])})"
    return text + (" ⚑" if side.get("flagged") else "")


def _worst_direction(segment: dict[str, Any]) -> str:
    """ "worse" when any flagged figure of the segment is worse, "better" when all are better."""
    directions = {
        (segment["metrics"].get(name) or {}).get("direction") for name in segment["flags"]
    }
    return "worse" if "worse" in directions else "better" if directions else ""


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
        "flags": flags_text(segment),
        # Worse or better than the reference: the row's colour and word (not colour alone).
        "direction": (m.get("direction") or "") if m.get("flagged") else "",
        "worst": _worst_direction(segment),
    }
