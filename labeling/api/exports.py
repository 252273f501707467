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
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from feedback.api.caller import DATA, Needs, caller_of
from feedback.api.inputs import json_object, query_params
from feedback.api.schema import ERROR_HEADERS, errors_for
from feedback.errors import Conflict, FieldError, InvalidInput, NotFound

from ..exports.request import ExportRequestSerializer, export_request
from ..exports.writers import CONTENT_TYPES
from ..models import Export
from ..selectors.exports import goldset_version_for_export
from ..services.exports import export_create
from ..services.goldset_snapshots import goldset_version_snapshot

ReadsExports = Needs.of(DATA)
EXPORT_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The export's id.")


def file_responses(description: str) -> dict[tuple[int, str], OpenApiResponse]:
    """A 200 per file format, under the content type the file is served with."""
    return {
        (200, content_type): OpenApiResponse(OpenApiTypes.BINARY, description=description)
        for content_type in CONTENT_TYPES.values()
    }


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


def get_export(request: Request, pk: int) -> Export:
    export = (
        Export.objects.filter(pk=pk, project_id__in=caller_of(request).project_ids(DATA))
        .select_related("project", "queue", "gold_version", "requested_by")
        .first()
    )
    if export is None:
        raise NotFound(FieldError("id", "not_found", f"No export {pk} of yours."))
    return export


class ExportCreateView(APIView):
    permission_classes = [ReadsExports]

    @extend_schema(
        operation_id="exports_create",
        summary="Ask for an export (built by a worker)",
        description="A project API key with the `data` scope (its own project), or a data "
        "scientist or admin of the project (a reviewer: 403). Poll `GET /exports/{id}`.",
        request=ExportRequestSerializer,
        parameters=ERROR_HEADERS,
        responses={202: ExportCreatedSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def post(self, request: Request) -> Response:
        data = json_object(request.data)
        caller = caller_of(request)
        project = caller.project(DATA, slug=data.get("project"))
        checked = export_request(data)
        export = export_create(
            project=project, request=checked, actor=caller.user, key_id=caller.key_id
        )
        return Response({"id": export.pk, "status": export.status}, status=status.HTTP_202_ACCEPTED)


class ExportDetailView(APIView):
    permission_classes = [ReadsExports]

    @extend_schema(
        operation_id="exports_retrieve",
        parameters=[EXPORT_ID, *ERROR_HEADERS],
        responses={200: ExportSerializer, **errors_for(401, 403, 404, 429)},
    )
    def get(self, request: Request, pk: int) -> Response:
        export = get_export(request, pk)
        return Response(ExportSerializer(export, context={"request": request}).data)


class ExportDownloadView(APIView):
    permission_classes = [ReadsExports]

    @extend_schema(
        operation_id="exports_download",
        responses={
            **file_responses("The file (JSONL, CSV or Parquet, as the export's format)."),
            **errors_for(401, 403, 404, 409, 429),
        },
        parameters=[EXPORT_ID, *ERROR_HEADERS],
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
    *ERROR_HEADERS,
]


class GoldSnapshotExportView(APIView):
    permission_classes = [ReadsExports]

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # ``?format=`` names the file format here, not one of DRF's renderers: never a 404.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="goldsets_versions_export",
        parameters=SNAPSHOT_PARAMETERS,
        responses={
            **file_responses("The published version's items by key; the same bytes every time."),
            **errors_for(400, 401, 403, 404, 409, 429),
        },
    )
    def get(self, request: Request, slug: str, number: int):
        query_params(request, {"format", "project"})
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in CONTENT_TYPES:
            raise InvalidInput.one("format", "invalid_choice", "One of jsonl, csv, parquet.")
        version = goldset_version_for_export(
            project_ids=caller_of(request).project_ids(DATA),
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
