"""Audits over REST: request one, read it, download its report, compare two. Thin views.

Who: a project API key with the ``data`` scope (its own project only), or a person who is a
data scientist or admin of the project. An ``ingest`` key, or a reviewer of the project, gets
403; another project's audit is 404. The request is declared once
(``labeling.payloads.audits``), for this view, the admin form and ``manage.py audit``, so every
refusal names its field the same way everywhere (``segments[0]``, ``source.queue``).
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api.caller import DATA, Needs, caller_of
from feedback.api.inputs import query_params
from feedback.api.schema import ERROR_HEADERS, errors_for
from feedback.errors import Conflict, FieldError, InvalidInput, NotFound

from ..audit_reports import audit_document, audits_compare, render_csv, render_json, render_markdown
from ..models import Audit
from ..payloads.audits import AuditCreateSerializer, audit_request
from ..selectors.audits import audits_for_project
from ..services.audits import audit_create

ReadsAudits = Needs.of(DATA)
AUDIT_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The audit's id.")
REPORT_TYPES = {
    "json": "application/json; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
}


class AuditAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Audit.Status.choices)


class AuditSerializer(serializers.Serializer):
    """The audit: inputs, state, and when done its result (see API.md, "Audits")."""

    id = serializers.IntegerField()
    project = serializers.SlugField()
    status = serializers.ChoiceField(choices=Audit.Status.choices)
    progress = serializers.FloatField()
    source = serializers.DictField()
    model_version = serializers.CharField(allow_null=True)
    params = serializers.DictField()
    error = serializers.CharField(allow_blank=True)
    requested_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    scope = serializers.DictField(allow_null=True)
    method = serializers.DictField(allow_null=True)
    reference = serializers.DictField(allow_null=True)
    overall = serializers.DictField(
        allow_null=True, help_text='{"n", "weighted_n", "effective_n", "metrics": {...}}'
    )
    segments = serializers.ListField(
        child=serializers.DictField(),
        help_text='[{"segment": {...}, "n", "weighted_n", "effective_n", "insufficient", '
        '"flagged", "metrics": {"error_rate": {"value", "ci_low", "ci_high", "difference", '
        '"ratio", "flagged", ...}, ...}}]',
    )
    flagged = serializers.ListField(child=serializers.DictField())
    comparisons = serializers.IntegerField(allow_null=True)
    caveats = serializers.ListField(child=serializers.CharField())
    seconds = serializers.FloatField(allow_null=True)


class AuditListSerializer(serializers.Serializer):
    results = AuditSerializer(many=True)


# --- access ------------------------------------------------------------------------------------


def get_audit(request: Request, pk: int) -> Audit:
    """The audit: 404 unless the caller belongs to its project, 403 in a role that does not
    read audits (a reviewer)."""
    project_id = Audit.objects.filter(pk=pk).values_list("project_id", flat=True).first()
    not_found = FieldError("id", "not_found", f"No audit {pk} of yours.")
    if project_id is None:
        raise NotFound(not_found)
    caller_of(request).check(DATA, project_id=project_id, not_found=not_found)
    return audits_for_project(project_id=project_id).get(pk=pk)


# --- views -------------------------------------------------------------------------------------


class AuditListView(APIView):
    permission_classes = [ReadsAudits]

    @extend_schema(
        operation_id="audits_list",
        parameters=[
            OpenApiParameter("project", str, description="A project's slug."),
            *ERROR_HEADERS,
        ],
        responses={200: AuditListSerializer, **errors_for(400, 401, 403, 429)},
        description="The latest 100 audits of the caller's projects, newest first.",
    )
    def get(self, request: Request) -> Response:
        query_params(request, {"project"})
        allowed = caller_of(request).project_ids(DATA)
        audits = Audit.objects.filter(project_id__in=allowed).select_related(
            "project", "requested_by"
        )
        if "project" in request.query_params:
            audits = audits.filter(project__slug=request.query_params["project"])
        return Response({"results": [audit_document(a) for a in audits.order_by("-id")[:100]]})

    @extend_schema(
        operation_id="audits_create",
        request=AuditCreateSerializer,
        parameters=ERROR_HEADERS,
        responses={
            201: AuditSerializer,
            202: AuditAcceptedSerializer,
            **errors_for(400, 401, 403, 404, 429),
        },
        description="Small sources are computed at once (201 with the result); larger ones by "
        'a worker (202 {"id", "status"}: poll GET /audits/{id}).',
    )
    def post(self, request: Request) -> Response:
        sent = audit_request(request.data)  # "project" is required of keys too
        caller = caller_of(request)
        project = caller.project(DATA, slug=sent.project)
        audit = audit_create(project=project, request=sent, actor=caller.user)
        if audit.status == Audit.Status.PENDING:
            return Response(
                {"id": audit.pk, "status": audit.status}, status=status.HTTP_202_ACCEPTED
            )
        audit = audits_for_project(project_id=project.pk).get(pk=audit.pk)
        return Response(audit_document(audit), status=status.HTTP_201_CREATED)


class AuditDetailView(APIView):
    permission_classes = [ReadsAudits]

    @extend_schema(
        operation_id="audits_retrieve",
        parameters=[AUDIT_ID, *ERROR_HEADERS],
        responses={200: AuditSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def get(self, request: Request, pk: int) -> Response:
        query_params(request, set())
        return Response(audit_document(get_audit(request, pk)))


class ReportNegotiation(DefaultContentNegotiation):
    """``?format=csv|json|md`` names the report, not a DRF renderer: never 404 on it. Errors
    are still JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class AuditReportView(APIView):
    permission_classes = [ReadsAudits]
    content_negotiation_class = ReportNegotiation

    @extend_schema(
        operation_id="audits_report",
        parameters=[
            AUDIT_ID,
            OpenApiParameter("format", str, enum=list(REPORT_TYPES), description="Default json."),
            *ERROR_HEADERS,
        ],
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR),
            (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR),
            **errors_for(400, 401, 403, 404, 409, 429),
        },
        description="The report of a finished audit as a download: JSON (the audit), CSV (one "
        "row per segment and figure) or Markdown (a model-card section). 409 until done.",
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        query_params(request, {"format"})
        kind = request.query_params.get("format", "json")
        if kind not in REPORT_TYPES:
            raise InvalidInput.one("format", "invalid_choice", "One of csv, json, md.")
        audit = get_audit(request, pk)
        if audit.status != Audit.Status.DONE:
            raise Conflict.one(
                "status", "not_ready", f"The audit is {audit.status}; its report comes when done."
            )
        body = {"json": render_json, "csv": render_csv, "md": render_markdown}[kind](audit)
        response = HttpResponse(body, content_type=REPORT_TYPES[kind])
        response["Content-Disposition"] = f'attachment; filename="audit-{audit.pk}.{kind}"'
        return response


class AuditCompareView(APIView):
    permission_classes = [ReadsAudits]

    @extend_schema(
        operation_id="audits_compare",
        parameters=[
            OpenApiParameter("against", int, required=True, description="The other audit's id."),
            OpenApiParameter("metric", str, description="Default error_rate."),
            AUDIT_ID,
            *ERROR_HEADERS,
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT),
            **errors_for(400, 401, 403, 404, 409, 429),
        },
        description="Two audits side by side, segment by segment (say, two model versions): "
        "the figure in each (a = `against`, b = this audit), the change b - a, and its "
        "Newcombe interval.",
    )
    def get(self, request: Request, pk: int) -> Response:
        query_params(request, {"against", "metric"})
        against = request.query_params.get("against", "")
        if not against.isdigit():
            raise InvalidInput.one("against", "invalid_type", "The other audit's id.")
        b = get_audit(request, pk)
        a = get_audit(request, int(against))
        for audit in (a, b):
            if audit.status != Audit.Status.DONE:
                raise Conflict.one("status", "not_ready", f"Audit {audit.pk} is {audit.status}.")
        metric = request.query_params.get("metric", "error_rate")
        known = set((a.result or {}).get("overall", {}).get("metrics", {}))
        if metric not in known:
            raise InvalidInput.one(
                "metric", "invalid_choice", f"One of {', '.join(sorted(known))}."
            )
        return Response(audits_compare(a, b, metric=metric))
