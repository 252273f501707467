"""Gold sets over REST (API.md, "Gold sets"): thin views and small serializers.

Who: a project API key with the ``data`` scope (its own project), or a person who is a data
scientist or admin of the project. An ``ingest``-only key, and a person holding neither role in
any project, get 403; another project's gold set is 404, whatever the caller's role there.

Which project: a gold set's slug is unique in its project. A key acts in its own project. A
person in several projects passes ``?project=<slug>`` (and ``"project"`` when creating) where a
slug alone would be ambiguous (400 then); in one project, the slug is enough.

Items are addressed by key: ``DELETE …/items?key=a&key=b`` removes (all or none), ``PATCH
…/items?key=a`` changes the fields given. A query parameter rather than a body, since DELETE
bodies are dropped by some clients and proxies.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api.caller import GOLD, Needs, caller_of
from feedback.api.inputs import StrictSerializer, json_object, query_params, validated
from feedback.api.schema import ERROR_HEADERS, errors_for
from feedback.api.serializers import AnyJSONField, SegmentField
from feedback.errors import InvalidInput, NotFound

from ..models import GoldItem, GoldSet, GoldSetVersion, Label
from ..payloads.gold import (
    GoldItemInSerializer,
    GoldItemPatchSerializer,
    GoldSetInSerializer,
    VersionNotesSerializer,
    gold_item_input,
    gold_set_input,
    version_notes,
)
from ..selectors.gold import (
    gold_items,
    goldset_list,
    goldset_versions,
    goldset_versions_diff,
)
from ..services.goldsets import (
    gold_item_add,
    gold_item_promote,
    gold_item_remove,
    gold_item_update,
    goldset_create,
    goldset_version_create_draft,
    goldset_version_publish,
)

# --- who may call ----------------------------------------------------------------------------

CuratesGold = Needs.of(GOLD)


def _project_param(request: Request) -> str | None:
    value = request.query_params.get("project")
    return value or None


def _goldsets(request: Request) -> QuerySet[GoldSet]:
    queryset = goldset_list(project_ids=caller_of(request).project_ids(GOLD))
    slug = _project_param(request)
    if slug is not None:
        queryset = queryset.filter(project__slug=slug)
    return queryset


def get_goldset(request: Request, slug: str) -> GoldSet:
    found = list(_goldsets(request).filter(slug=slug)[:2])
    if not found:
        raise NotFound.one("slug", "not_found", f"No gold set {slug!r} of yours.")
    if len(found) > 1:
        raise InvalidInput.one(
            "project",
            "ambiguous",
            f"Gold set {slug!r} exists in several of your projects: "
            f"name one with ?project=<slug> ({', '.join(g.project.slug for g in found)}…).",
        )
    return found[0]


def get_version(request: Request, slug: str, number: int) -> GoldSetVersion:
    gold_set = get_goldset(request, slug)
    version = (
        GoldSetVersion.objects.select_related("gold_set", "gold_set__project", "parent")
        .filter(gold_set=gold_set, number=number)
        .first()
    )
    if version is None:
        raise NotFound.one("number", "not_found", f"Gold set {slug!r} has no version {number}.")
    return version


# --- serializers -----------------------------------------------------------------------------


class GoldSetSerializer(serializers.Serializer):
    slug = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
    project = serializers.CharField(source="project.slug", read_only=True)
    latest_published = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Number of the latest published version."
    )
    draft = serializers.IntegerField(
        source="draft_number", read_only=True, allow_null=True, help_text="The draft's number."
    )
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )
    created_at = serializers.DateTimeField(read_only=True)


class GoldSetVersionSerializer(serializers.Serializer):
    number = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(GoldSetVersion.Status.choices, read_only=True)
    item_count = serializers.IntegerField(read_only=True)
    checksum = serializers.CharField(
        read_only=True, help_text="sha256 of the canonical content; empty while a draft."
    )
    published_at = serializers.DateTimeField(read_only=True, allow_null=True)
    published_by = serializers.CharField(
        source="published_by.username", read_only=True, allow_null=True, default=None
    )
    parent = serializers.IntegerField(
        source="parent.number",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The published version this one was copied from.",
    )
    notes = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class LineageSerializer(serializers.Serializer):
    prediction_id = serializers.IntegerField(source="source_prediction_id", allow_null=True)
    external_id = serializers.CharField(source="source_external_id")
    model_version = serializers.CharField(source="source_model_version")
    item_id = serializers.IntegerField(source="source_item_id", allow_null=True)
    label_ids = serializers.ListField(child=serializers.IntegerField(), source="source_label_ids")
    agreement = serializers.FloatField(source="source_agreement", allow_null=True)


class ExpectedOutSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(Label.Verdict.choices, allow_null=True, read_only=True)
    label = serializers.CharField(allow_null=True, read_only=True)
    categories = serializers.ListField(child=serializers.CharField(), read_only=True)


@extend_schema_field(ExpectedOutSerializer)
class ExpectedField(serializers.Field):
    def to_representation(self, item: GoldItem) -> dict[str, Any]:
        return {
            "verdict": item.expected_verdict or None,
            "label": item.expected_label or None,
            "categories": list(item.expected_categories or []),
        }


class GoldItemSerializer(serializers.Serializer):
    key = serializers.CharField(read_only=True)
    input = AnyJSONField(read_only=True)
    output = AnyJSONField(read_only=True)
    expected = ExpectedField(source="*", read_only=True)
    segment = SegmentField(read_only=True)
    lineage = LineageSerializer(source="*", read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class GoldPromoteSerializer(StrictSerializer):
    from_item = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1, help_text="A completed queue item of the project."
    )
    key = serializers.CharField(
        max_length=255,
        required=False,
        allow_null=True,
        help_text="Default (absent or null): the prediction's external_id.",
    )
    min_agreement = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=1,
        help_text="Override of REDRESS_GOLD_MIN_AGREEMENT for this request (0 to 1; null: the "
        "setting).",
    )


class GoldRemovedSerializer(serializers.Serializer):
    removed = serializers.ListField(child=serializers.CharField())
    item_count = serializers.IntegerField()


class GoldDiffSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    against = serializers.IntegerField()
    added = serializers.ListField(child=serializers.CharField(), help_text="Keys only in version.")
    removed = serializers.ListField(
        child=serializers.CharField(), help_text="Keys only in against."
    )
    changed = serializers.ListField(
        child=serializers.CharField(), help_text="Keys in both, with other content."
    )


# --- schema pieces ---------------------------------------------------------------------------

PROJECT_PARAM = OpenApiParameter(
    "project",
    str,
    description="The project's slug. A person in several projects names it where a gold-set "
    "slug alone is ambiguous (400 then); an API key acts in its own project (404 for another).",
)
SLUG_PARAM = OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The gold set.")
NUMBER_PARAM = OpenApiParameter(
    "number", int, OpenApiParameter.PATH, description="The version's number."
)
KEY_PARAM = OpenApiParameter(
    "key",
    str,
    required=True,
    many=True,
    description="An item's key (repeatable to remove several).",
)
ONE_KEY_PARAM = OpenApiParameter("key", str, required=True, description="The item's key.")
VERSION_PARAMS = [SLUG_PARAM, NUMBER_PARAM, PROJECT_PARAM, *ERROR_HEADERS]
AUTH_DESCRIPTION = (
    "A project API key with the `data` scope, or a data scientist or admin of the project. "
)


# --- views -----------------------------------------------------------------------------------


class GoldSetListView(APIView):
    permission_classes = [CuratesGold]

    @extend_schema(
        operation_id="goldsets_list",
        summary="Gold sets",
        description=AUTH_DESCRIPTION + "Every gold set of the caller's projects.",
        parameters=[PROJECT_PARAM, *ERROR_HEADERS],
        responses={200: GoldSetSerializer(many=True), **errors_for(400, 401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        query_params(request, {"project"})
        return Response(GoldSetSerializer(list(_goldsets(request)), many=True).data)

    @extend_schema(
        operation_id="goldsets_create",
        summary="Create a gold set (and its draft v1)",
        description=AUTH_DESCRIPTION + "409 when the slug is taken in the project.",
        request=GoldSetInSerializer,
        parameters=ERROR_HEADERS,
        responses={201: GoldSetSerializer, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        query_params(request, set())
        sent = gold_set_input(request.data)
        # A person who curates gold in one project only may leave the project out.
        project = caller_of(request).project(GOLD, slug=sent.project, sole=True)
        gold_set = goldset_create(
            project=project,
            slug=sent.slug,
            name=sent.name,
            description=sent.description,
            actor=request.user,
        )
        created = goldset_list(project_ids=[project.pk]).get(pk=gold_set.pk)
        return Response(GoldSetSerializer(created).data, status=status.HTTP_201_CREATED)


class GoldSetVersionListView(APIView):
    permission_classes = [CuratesGold]

    @extend_schema(
        operation_id="goldsets_versions_list",
        summary="Versions of a gold set",
        description=AUTH_DESCRIPTION + "Oldest first.",
        parameters=[SLUG_PARAM, PROJECT_PARAM, *ERROR_HEADERS],
        responses={
            200: GoldSetVersionSerializer(many=True),
            **errors_for(400, 401, 403, 404, 429),
        },
    )
    def get(self, request: Request, slug: str) -> Response:
        query_params(request, {"project"})
        versions = goldset_versions(gold_set=get_goldset(request, slug))
        return Response(GoldSetVersionSerializer(list(versions), many=True).data)

    @extend_schema(
        operation_id="goldsets_versions_create",
        summary="Start a new draft",
        description=AUTH_DESCRIPTION + "A copy of the latest published version (items and "
        "their lineage). 409 while the gold set has a draft.",
        request=VersionNotesSerializer,
        parameters=[SLUG_PARAM, PROJECT_PARAM, *ERROR_HEADERS],
        responses={201: GoldSetVersionSerializer, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def post(self, request: Request, slug: str) -> Response:
        query_params(request, {"project"})
        gold_set = get_goldset(request, slug)
        version = goldset_version_create_draft(
            gold_set=gold_set, actor=request.user, notes=version_notes(request.data)
        )
        version = goldset_versions(gold_set=gold_set).get(pk=version.pk)
        return Response(GoldSetVersionSerializer(version).data, status=status.HTTP_201_CREATED)


ITEM_OR_PROMOTION = PolymorphicProxySerializer(
    component_name="GoldItemAddOrPromote",
    serializers=[GoldItemInSerializer, GoldPromoteSerializer],
    resource_type_field_name=None,
)


class GoldItemListView(APIView):
    permission_classes = [CuratesGold]

    @extend_schema(
        operation_id="goldsets_items_list",
        summary="Items of a version",
        description=AUTH_DESCRIPTION + "Sorted by key.",
        parameters=VERSION_PARAMS,
        responses={200: GoldItemSerializer(many=True), **errors_for(400, 401, 403, 404, 429)},
    )
    def get(self, request: Request, slug: str, number: int) -> Response:
        query_params(request, {"project"})
        version = get_version(request, slug, number)
        return Response(GoldItemSerializer(list(gold_items(version=version)), many=True).data)

    @extend_schema(
        operation_id="goldsets_items_add",
        summary="Add an item to a draft, or promote a queue item",
        description=AUTH_DESCRIPTION + "Either an item (`key`, `input`, `output`, `expected`, "
        '`segment`) or `{"from_item": <queue item id>}`: a completed queue item whose '
        "consensus is clear (not a tie nor adjudicated, agreement ≥ `min_agreement`, default "
        "REDRESS_GOLD_MIN_AGREEMENT) is copied with its lineage. 409: a published version, a "
        "key taken, an item that is not promotable (the error says why).",
        request=ITEM_OR_PROMOTION,
        parameters=VERSION_PARAMS,
        responses={201: GoldItemSerializer, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def post(self, request: Request, slug: str, number: int) -> Response:
        query_params(request, {"project"})
        version = get_version(request, slug, number)
        data = json_object(request.data)
        if "from_item" in data:
            promotion = validated(GoldPromoteSerializer, data)
            item = gold_item_promote(
                version=version,
                item_id=promotion["from_item"],
                key=promotion.get("key"),
                min_agreement=promotion.get("min_agreement"),
                actor=request.user,
            )
        else:
            item = gold_item_add(version=version, item=gold_item_input(data), actor=request.user)
        return Response(GoldItemSerializer(item).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="goldsets_items_update",
        summary="Change an item of a draft",
        description=AUTH_DESCRIPTION + "The fields given replace the stored ones. 409 for a "
        "published version.",
        request=GoldItemPatchSerializer,
        parameters=[*VERSION_PARAMS, ONE_KEY_PARAM],
        responses={200: GoldItemSerializer, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def patch(self, request: Request, slug: str, number: int) -> Response:
        query_params(request, {"project", "key"})
        keys = request.query_params.getlist("key")
        if len(keys) != 1 or not keys[0]:
            raise InvalidInput.one("key", "required", "Name one item: ?key=<key>.")
        version = get_version(request, slug, number)
        item = gold_item_update(
            version=version,
            key=keys[0],
            item=gold_item_input(request.data, partial=True),
            actor=request.user,
        )
        return Response(GoldItemSerializer(item).data)

    @extend_schema(
        operation_id="goldsets_items_remove",
        summary="Remove items from a draft",
        description=AUTH_DESCRIPTION + "By key (`?key=a&key=b`): all of them or none (404 "
        "naming the missing keys). 409 for a published version.",
        parameters=[*VERSION_PARAMS, KEY_PARAM],
        responses={200: GoldRemovedSerializer, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def delete(self, request: Request, slug: str, number: int) -> Response:
        query_params(request, {"project", "key"})
        version = get_version(request, slug, number)
        removed = gold_item_remove(
            version=version, keys=request.query_params.getlist("key"), actor=request.user
        )
        version.refresh_from_db(fields=["item_count"])
        return Response({"removed": removed, "item_count": version.item_count})


class GoldVersionPublishView(APIView):
    permission_classes = [CuratesGold]

    @extend_schema(
        operation_id="goldsets_versions_publish",
        summary="Publish a draft: frozen for good",
        description=AUTH_DESCRIPTION + "Records the sha256 of the canonical content (items "
        "sorted by key, canonical JSON), the item count, who and when. 409 when published "
        "already or empty.",
        request=VersionNotesSerializer,
        parameters=VERSION_PARAMS,
        responses={200: GoldSetVersionSerializer, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def post(self, request: Request, slug: str, number: int) -> Response:
        query_params(request, {"project"})
        version = get_version(request, slug, number)
        notes = version_notes(request.data)
        version = goldset_version_publish(version=version, actor=request.user, notes=notes)
        version = goldset_versions(gold_set=version.gold_set).get(pk=version.pk)
        return Response(GoldSetVersionSerializer(version).data)


class GoldVersionDiffView(APIView):
    permission_classes = [CuratesGold]

    @extend_schema(
        operation_id="goldsets_versions_diff",
        summary="Compare two versions",
        description=AUTH_DESCRIPTION + "Keys added in version `number` since `against`, "
        "removed, and changed (same key, other content). Sorted.",
        parameters=[
            *VERSION_PARAMS,
            OpenApiParameter(
                "against", int, required=True, description="The other version's number."
            ),
        ],
        responses={200: GoldDiffSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def get(self, request: Request, slug: str, number: int) -> Response:
        query_params(request, {"project", "against"})
        raw = request.query_params.get("against", "")
        if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
            raise InvalidInput.one("against", "invalid", "The other version's number.")
        version = get_version(request, slug, number)
        against = GoldSetVersion.objects.filter(
            gold_set_id=version.gold_set_id, number=int(raw)
        ).first()
        if against is None:
            raise NotFound.one("against", "not_found", f"No version {raw} of this gold set.")
        diff = goldset_versions_diff(version=version, against=against)
        return Response({"version": version.number, "against": against.number, **diff})
