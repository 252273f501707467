"""Exports over REST: create (202), poll, download; gold-set snapshot export. Thin views.

Who: a project API key with the ``data`` scope (its own project only), or a person who is a
data scientist or admin of the project. ``ingest``-only keys and reviewers get 403; another
project's export is a 404.
"""

from __future__ import annotations

import json

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
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
from ..models import Export, GoldSetVersion
from ..selectors.exports import goldset_version_for_export
from ..services.exports import export_create
from ..services.goldset_snapshots import goldset_version_manifest, goldset_version_snapshot

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
            "manifest_url",
        ]
        read_only_fields = fields

    manifest_url = serializers.SerializerMethodField()

    def get_download_url(self, export: Export) -> str | None:
        if export.status != Export.Status.DONE:
            return None
        return reverse("export-download", args=[export.pk], request=self.context.get("request"))

    def get_manifest_url(self, export: Export) -> str | None:
        if export.status != Export.Status.DONE:
            return None
        return reverse("export-manifest", args=[export.pk], request=self.context.get("request"))


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


def manifest_response(manifest: dict, filename: str) -> HttpResponse:
    """A manifest as a JSON download (pretty, keys sorted: a person reads it too)."""
    response = HttpResponse(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        content_type="application/json",
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


MANIFEST_RESPONSE = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="The manifest as a JSON download: the request (filter, split, seed), the gold "
    "versions touched, rows and rows per split, the columns with their types and encoding, "
    "the row order, the code version; and this build's export id, who asked, when, the file's "
    "sha256 and size. A Parquet file carries the same manifest (minus this build's own "
    "fields) in its key-value metadata under `redress.manifest`.",
)


class ExportManifestView(APIView):
    permission_classes = [ReadsExports]

    @extend_schema(
        operation_id="exports_manifest",
        summary="The manifest of a finished export, as a JSON file beside the export",
        responses={200: MANIFEST_RESPONSE, **errors_for(401, 403, 404, 409, 429)},
        parameters=[EXPORT_ID, *ERROR_HEADERS],
    )
    def get(self, request: Request, pk: int):
        export = get_export(request, pk)
        if export.status != Export.Status.DONE:
            raise Conflict.one("status", "not_done", f"The export is {export.status}, not done.")
        return manifest_response(export.manifest or {}, f"export-{export.pk}.manifest.json")


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
        response["X-Goldset-Version"] = str(version.number)
        if version.checksum:
            response["X-Goldset-Checksum"] = version.checksum
        return response


class GoldSnapshotManifestView(APIView):
    permission_classes = [ReadsExports]

    @extend_schema(
        operation_id="goldsets_versions_manifest",
        summary="The manifest of a published version's snapshot files",
        description="Which version, its checksum, item count, publication time and columns: "
        "the JSON file to keep beside a JSON lines or CSV snapshot (a Parquet snapshot carries "
        "it in its key-value metadata under `redress.manifest`).",
        parameters=[p for p in SNAPSHOT_PARAMETERS if p.name != "format"],
        responses={200: MANIFEST_RESPONSE, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def get(self, request: Request, slug: str, number: int):
        query_params(request, {"project"})
        version = goldset_version_for_export(
            project_ids=caller_of(request).project_ids(DATA),
            slug=slug,
            number=number,
            project_slug=request.query_params.get("project"),
        )
        if version is None:
            raise NotFound(FieldError("version", "not_found", f"No version {number} of {slug!r}."))
        if version.status != GoldSetVersion.Status.PUBLISHED:
            raise Conflict.one(
                "version", "not_published", "Only a published version has snapshot files."
            )
        return manifest_response(
            goldset_version_manifest(version=version), f"{slug}-v{number}.manifest.json"
        )
