"""Exports over REST: create (202), poll, download; gold-set snapshot export. Thin views.

Who: a project API key with the ``data`` scope (its own project only), or a person who is a
data scientist or admin of the project. ``ingest``-only keys and reviewers get 403; another
project's export is a 404.
"""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from feedback.api.auth import key_context
from feedback.api.permissions import ReadsProjectData
from feedback.api.serializers import ErrorSerializer
from feedback.errors import Conflict, FieldError, InvalidInput, NotFound
from feedback.models import Membership, Project
from feedback.selectors import projects_for_user

from ..exports.writers import CONTENT_TYPES
from ..models import Export
from ..selectors import READ_ROLES
from ..selectors.exports import exports_of_project, exports_visible_to, goldset_version_for_export
from ..services.exports import export_create
from ..services.goldset_snapshots import goldset_version_snapshot

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409)}


def file_responses(description: str) -> dict[tuple[int, str], OpenApiResponse]:
    """A 200 per file format, under the content type the file is served with."""
    return {
        (200, content_type): OpenApiResponse(OpenApiTypes.BINARY, description=description)
        for content_type in CONTENT_TYPES.values()
    }


class ExportFilterSerializer(serializers.Serializer):
    model_version = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=100
    )
    completed_after = serializers.DateTimeField(required=False, allow_null=True)
    completed_before = serializers.DateTimeField(required=False, allow_null=True)
    segment = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=128),
        required=False,
        allow_null=True,
        help_text="Segment values to match: keys of letters, digits, '_' and '-' (≤ 64).",
    )


class ExportSplitSerializer(serializers.Serializer):
    train = serializers.FloatField(required=False, default=0.8, min_value=0, max_value=1)
    validation = serializers.FloatField(required=False, default=0.1, min_value=0, max_value=1)
    test = serializers.FloatField(required=False, default=0.1, min_value=0, max_value=1)
    key = serializers.CharField(
        required=False, default="external_id", help_text="'external_id' or 'segment.<key>'."
    )
    seed = serializers.IntegerField(required=False, default=0, min_value=0, max_value=2**63 - 1)


class ExportRequestSerializer(serializers.Serializer):
    """Documents the request; the service validates it (errors name the field)."""

    project = serializers.SlugField(
        required=False,
        allow_null=True,
        help_text="Optional (or null) with an API key: its own project.",
    )
    queue = serializers.IntegerField(required=False, allow_null=True)
    format = serializers.ChoiceField(Export.Format.choices)
    filter = ExportFilterSerializer(required=False, allow_null=True, help_text="null: no filter.")
    include_labels = serializers.BooleanField(required=False, default=False)
    split = ExportSplitSerializer(
        required=False, allow_null=True, help_text="null: the default 0.8/0.1/0.1 by external_id."
    )
    exclude_gold_from_train = serializers.BooleanField(required=False, default=True)


class ExportCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()


class ExportSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id",
            "project",
            "queue",
            "format",
            "status",
            "progress",
            "rows",
            "rows_per_split",
            "checksum",
            "size_bytes",
            "manifest",
            "spec",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, export: Export) -> str | None:
        if export.status != Export.Status.DONE:
            return None
        return reverse("export-download", args=[export.pk], request=self.context.get("request"))


def _project_for_create(request: Request, slug: object) -> Project:
    if slug is not None and not isinstance(slug, str):
        raise InvalidInput.one("project", "invalid_type", "The project's slug.")
    context = key_context(request)
    if context is not None:
        if slug is not None and slug != context.project_slug:
            raise NotFound(FieldError("project", "not_found", f"No project {slug!r} of yours."))
        return Project.objects.get(pk=context.project_id)
    if not isinstance(slug, str) or not slug:
        raise InvalidInput.one("project", "required", "The project's slug.")
    project = projects_for_user(user=request.user, roles=READ_ROLES).filter(slug=slug).first()
    if project is not None:
        return project
    if Membership.objects.filter(user=request.user, project__slug=slug).exists():
        raise PermissionDenied("Exports are for the project's data scientists and admins.")
    raise NotFound(FieldError("project", "not_found", f"No project {slug!r} of yours."))


def visible_exports(request: Request):
    context = key_context(request)
    if context is not None:
        return exports_of_project(project_id=context.project_id)
    return exports_visible_to(user=request.user)


def get_export(request: Request, pk: int) -> Export:
    export = visible_exports(request).filter(pk=pk).first()
    if export is None:
        raise NotFound(FieldError("id", "not_found", f"No export {pk} of yours."))
    return export


class ExportCreateView(APIView):
    permission_classes = [ReadsProjectData]

    @extend_schema(
        operation_id="exports_create",
        request=ExportRequestSerializer,
        responses={202: ExportCreatedSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = request.data
        if not isinstance(data, dict):
            raise InvalidInput.one(None, "invalid_type", "The body must be a JSON object.")
        project = _project_for_create(request, data.get("project"))
        context = key_context(request)
        export = export_create(
            project=project,
            data={k: v for k, v in data.items() if k != "project"},
            actor=None if context is not None else request.user,
            key_id=context.key_id if context is not None else None,
        )
        return Response({"id": export.pk, "status": export.status}, status=status.HTTP_202_ACCEPTED)


class ExportDetailView(APIView):
    permission_classes = [ReadsProjectData]

    @extend_schema(operation_id="exports_retrieve", responses={200: ExportSerializer, **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        export = get_export(request, pk)
        return Response(ExportSerializer(export, context={"request": request}).data)


class ExportDownloadView(APIView):
    permission_classes = [ReadsProjectData]

    @extend_schema(
        operation_id="exports_download",
        responses={
            **file_responses("The file (JSONL, CSV or Parquet, as the export's format)."),
            **ERRORS,
        },
    )
    def get(self, request: Request, pk: int):
        export = get_export(request, pk)
        if export.status != Export.Status.DONE or not export.file:
            raise Conflict.one("status", "not_done", f"The export is {export.status}, not done.")
        handle = default_storage.open(export.file.name, "rb")
        response = FileResponse(
            handle,
            as_attachment=True,
            filename=f"export-{export.pk}.{export.format}",
            content_type=CONTENT_TYPES[export.format],
        )
        response["ETag"] = f'"{export.checksum}"'
        response["X-Checksum-Sha256"] = export.checksum
        return response


SNAPSHOT_PARAMETERS = [
    OpenApiParameter(
        "format", str, enum=list(CONTENT_TYPES), description="jsonl (default), csv or parquet"
    ),
    OpenApiParameter(
        "project", str, description="The project's slug, when your gold sets share a slug."
    ),
    OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The gold set's slug."),
    OpenApiParameter("number", int, OpenApiParameter.PATH, description="A published version."),
]


class GoldSnapshotExportView(APIView):
    permission_classes = [ReadsProjectData]

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # ``?format=`` names the file format here, not one of DRF's renderers: never a 404.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="goldsets_versions_export",
        parameters=SNAPSHOT_PARAMETERS,
        responses={
            **file_responses("The published version's items by key; the same bytes every time."),
            **ERRORS,
        },
    )
    def get(self, request: Request, slug: str, number: int):
        unknown = sorted(set(request.query_params) - {"format", "project"})
        if unknown:
            raise InvalidInput(
                [
                    FieldError(name, "unknown_parameter", "Allowed: format, project.")
                    for name in unknown
                ]
            )
        if "\x00" in request.query_params.get("project", ""):
            # PostgreSQL cannot compare text holding NUL: a 500 otherwise.
            raise InvalidInput.one("project", "invalid", "NUL characters are not allowed.")
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in CONTENT_TYPES:
            raise InvalidInput.one("format", "invalid_choice", "One of jsonl, csv, parquet.")
        context = key_context(request)
        if context is not None:
            project_ids = [context.project_id]
        else:
            project_ids = projects_for_user(user=request.user, roles=READ_ROLES).values("pk")
        version = goldset_version_for_export(
            project_ids=project_ids,
            slug=slug,
            number=number,
            project_slug=request.query_params.get("project"),
        )
        if version is None:
            raise NotFound(FieldError("version", "not_found", f"No version {number} of {slug!r}."))
        chunks = goldset_version_snapshot(version=version, fmt=fmt)
        response = StreamingHttpResponse(chunks, content_type=CONTENT_TYPES[fmt])
        response["Content-Disposition"] = f'attachment; filename="{slug}-v{number}.{fmt}"'
        if version.checksum:
            response["X-Goldset-Checksum"] = version.checksum
        return response
