"""Monitoring over REST: metrics from rollups, alert rules and their events. Thin views.

Reading (metrics, rules, events): a project API key with the ``data`` scope, or a project
member. Writing rules (create, change, delete, evaluate): the project's admins.
"""

from __future__ import annotations

import datetime as dt

from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api.caller import MANAGE, MEMBER, Access, Needs, caller_of
from feedback.api.filters import SEGMENT_PREFIX, segment_params
from feedback.api.inputs import json_object, query_params
from feedback.api.schema import ERROR_HEADERS, errors_for
from feedback.errors import FieldError, InvalidInput, NotFound

from . import alerts
from .metrics import metric_check, metric_compare, metric_series
from .models import AlertEvent, AlertRule

# Read: the data scope, or any member of the project (reviewers included: rates, not rows).
READ = Access(
    "monitoring_read",
    "Monitoring is for members of the project, or an API key with the 'data' scope.",
    scope="data",
    roles=MEMBER.roles,
)
Reads = Needs.of(READ)
Member = Needs.of(MEMBER)
MAX_HOURLY = 24 * 93
BY_CHOICES = ("hour", "day", "model_version")


def _moment(params: dict, name: str) -> dt.datetime | None:
    raw = (params.get(name) or [None])[-1]
    if raw in (None, ""):
        return None
    moment = parse_datetime(raw)
    if moment is None and (day := parse_date(raw)) is not None:
        moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    if moment is None:
        raise InvalidInput.one(name, "invalid", "An ISO 8601 date or date-time.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def _one(params: dict, name: str, *, required: bool = False) -> str | None:
    values = params.get(name) or []
    if not values or values[-1] == "":
        if required:
            raise InvalidInput.one(name, "required", f"Give {name}.")
        return None
    return values[-1]


def _segment(request) -> tuple[str, str] | None:
    found = segment_params(request.query_params)
    if len(found) > 1:
        raise InvalidInput.one(
            SEGMENT_PREFIX + sorted(found)[1],
            "invalid",
            "One segment key at a time (rollups are kept per monitored key).",
        )
    return next(iter(found.items()), None)


def _window(params) -> tuple[dt.datetime | None, dt.datetime | None]:
    start, end = _moment(params, "from"), _moment(params, "to")
    if start and end and start >= end:
        raise InvalidInput.one("to", "invalid", "'to' must be after 'from'.")
    return start, end


PROJECT = OpenApiParameter("project", str, required=True, description="A project's slug.")
METRIC = OpenApiParameter(
    "metric",
    str,
    required=True,
    description="complaint_rate, dispute_rate, upheld_rate, reviewer_error_rate or "
    "category_rate:<slug>.",
)
FROM = OpenApiParameter("from", str, description="ISO date-time (inclusive), by hour bucket.")
TO = OpenApiParameter("to", str, description="ISO date-time (exclusive).")


class RateSerializer(serializers.Serializer):
    numerator = serializers.FloatField()
    denominator = serializers.FloatField()
    value = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)


class PointSerializer(RateSerializer):
    key = serializers.CharField()


class SeriesSerializer(serializers.Serializer):
    metric = serializers.CharField()
    series = PointSerializer(many=True)


class VersionRateSerializer(RateSerializer):
    model_version = serializers.CharField()


class CompareSerializer(serializers.Serializer):
    a = VersionRateSerializer()
    b = VersionRateSerializer()
    difference = serializers.FloatField(allow_null=True)
    difference_ci_low = serializers.FloatField(allow_null=True)
    difference_ci_high = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)


class MetricsView(APIView):
    permission_classes = [Reads]

    @extend_schema(
        operation_id="metrics_series",
        parameters=[
            PROJECT,
            METRIC,
            OpenApiParameter(
                "by",
                str,
                description="hour, day, model_version or "
                "segment.<key> (a monitored key). Default day.",
            ),
            OpenApiParameter("model_version", str),
            FROM,
            TO,
            OpenApiParameter("segment.<key>", str, description="One segment value."),
            *ERROR_HEADERS,
        ],
        responses={200: SeriesSerializer, **errors_for(400, 401, 403, 404, 429)},
        description="A rate from the hourly rollups with its numerator, denominator and "
        "Wilson 95 % interval, per hour, day, model version or segment value.",
    )
    def get(self, request: Request) -> Response:
        params = query_params(
            request,
            {"project", "metric", "by", "model_version", "from", "to"},
            prefixes=[SEGMENT_PREFIX],
        )
        project = caller_of(request).project(READ, slug=_one(params, "project", required=True))
        metric = metric_check(_one(params, "metric", required=True))
        by = _one(params, "by") or "day"
        if by not in BY_CHOICES and not (by.startswith("segment.") and len(by) > 8):
            raise InvalidInput.one(
                "by", "invalid_choice", "hour, day, model_version or segment.<key>."
            )
        segment = _segment(request)
        if by.startswith("segment.") and segment and segment[0] != by[8:]:
            raise InvalidInput.one(
                SEGMENT_PREFIX + segment[0], "invalid", f"Grouped by {by}: filter on that key only."
            )
        start, end = _window(params)
        if by == "hour":
            end_ = end or dt.datetime.now(dt.UTC)
            if start is None or (end_ - start) > dt.timedelta(hours=MAX_HOURLY):
                raise InvalidInput.one(
                    "from", "invalid", f"By hour: give 'from', at most {MAX_HOURLY} hours back."
                )
        return Response(
            metric_series(
                project_id=project.pk,
                metric=metric,
                by=by,
                model_version=_one(params, "model_version"),
                start=start,
                end=end,
                segment=segment,
            )
        )


class MetricsCompareView(APIView):
    permission_classes = [Reads]

    @extend_schema(
        operation_id="metrics_compare",
        parameters=[
            PROJECT,
            METRIC,
            OpenApiParameter("a", str, required=True, description="The control model version."),
            OpenApiParameter("b", str, required=True, description="The canary model version."),
            FROM,
            TO,
            OpenApiParameter("segment.<key>", str, description="One segment value."),
            *ERROR_HEADERS,
        ],
        responses={200: CompareSerializer, **errors_for(400, 401, 403, 404, 429)},
        description="b against a: both rates, the difference b - a with Newcombe's 95 % "
        "interval, and the two-sided p-value of the pooled two-proportion z-test.",
    )
    def get(self, request: Request) -> Response:
        params = query_params(
            request, {"project", "metric", "a", "b", "from", "to"}, prefixes=[SEGMENT_PREFIX]
        )
        project = caller_of(request).project(READ, slug=_one(params, "project", required=True))
        metric = metric_check(_one(params, "metric", required=True))
        a, b = _one(params, "a", required=True), _one(params, "b", required=True)
        start, end = _window(params)
        return Response(
            metric_compare(
                project_id=project.pk,
                metric=metric,
                a=a,
                b=b,
                start=start,
                end=end,
                segment=_segment(request),
            )
        )


# --- alert rules -------------------------------------------------------------------------------


class AlertRuleInSerializer(serializers.Serializer):
    project = serializers.SlugField()
    name = serializers.CharField()
    metric = serializers.CharField()
    filter = serializers.DictField(required=False)
    window_minutes = serializers.IntegerField(required=False)
    condition = serializers.DictField()
    min_volume = serializers.IntegerField(required=False)
    cooldown_minutes = serializers.IntegerField(required=False)
    notify_emails = serializers.ListField(child=serializers.EmailField(), required=False)
    active = serializers.BooleanField(required=False)


class AlertRuleOutSerializer(AlertRuleInSerializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=AlertRule.State.choices)
    state_since = serializers.DateTimeField(allow_null=True)
    last_evaluated_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class EvaluationSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=AlertRule.State.choices)
    value = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    volume = serializers.FloatField()
    event = serializers.IntegerField(allow_null=True)


class AlertEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    rule = serializers.IntegerField()
    state = serializers.ChoiceField(choices=AlertRule.State.choices)
    value = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    volume = serializers.FloatField()
    baseline_value = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    model_version = serializers.CharField()
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    created_at = serializers.DateTimeField()


RULE_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The rule's id.")


def get_rule(request: Request, pk: int, *, write: bool = False) -> AlertRule:
    """404 unless the caller may read the rule's project; 403 for a write by a non-admin."""
    rule = AlertRule.objects.select_related("project").filter(pk=pk).first()
    not_found = FieldError("id", "not_found", f"No alert rule {pk} of yours.")
    if rule is None:
        raise NotFound(not_found)
    caller = caller_of(request)
    caller.check(READ, project_id=rule.project_id, not_found=not_found)
    if write:
        caller.require(MANAGE, project_id=rule.project_id)
    return rule


class AlertRuleListView(APIView):
    permission_classes = [Member]

    @extend_schema(
        operation_id="alert_rules_list",
        parameters=[
            OpenApiParameter("project", str, description="A project's slug."),
            *ERROR_HEADERS,
        ],
        responses={200: AlertRuleOutSerializer(many=True), **errors_for(400, 401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        params = query_params(request, {"project"})
        rules = AlertRule.objects.filter(
            project_id__in=caller_of(request).project_ids(READ)
        ).select_related("project")
        if slug := _one(params, "project"):
            rules = rules.filter(project__slug=slug)
        return Response([alerts.rule_document(r) for r in rules.order_by("id")[:500]])

    @extend_schema(
        operation_id="alert_rules_create",
        request=AlertRuleInSerializer,
        parameters=ERROR_HEADERS,
        responses={201: AlertRuleOutSerializer, **errors_for(400, 401, 403, 404, 429)},
        description="Project admins only.",
    )
    def post(self, request: Request) -> Response:
        data = json_object(request.data)
        if not data.get("project"):
            raise InvalidInput.one("project", "required", "The project's slug.")
        project = caller_of(request).project(MANAGE, slug=data.get("project"))
        rule = alerts.rule_create(project=project, data=data)
        return Response(alerts.rule_document(rule), status=status.HTTP_201_CREATED)


class AlertRuleDetailView(APIView):
    permission_classes = [Member]

    @extend_schema(
        operation_id="alert_rules_retrieve",
        parameters=[RULE_ID, *ERROR_HEADERS],
        responses={200: AlertRuleOutSerializer, **errors_for(401, 403, 404, 429)},
    )
    def get(self, request: Request, pk: int) -> Response:
        query_params(request, set())
        return Response(alerts.rule_document(get_rule(request, pk)))

    @extend_schema(
        operation_id="alert_rules_update",
        request=AlertRuleInSerializer,
        parameters=[RULE_ID, *ERROR_HEADERS],
        responses={200: AlertRuleOutSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def patch(self, request: Request, pk: int) -> Response:
        rule = get_rule(request, pk, write=True)
        rule = alerts.rule_update(rule=rule, data=json_object(request.data))
        return Response(alerts.rule_document(rule))

    @extend_schema(
        operation_id="alert_rules_destroy",
        parameters=[RULE_ID, *ERROR_HEADERS],
        responses={204: None, **errors_for(401, 403, 404, 429)},
    )
    def delete(self, request: Request, pk: int) -> Response:
        get_rule(request, pk, write=True).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class AlertRuleEvaluateView(APIView):
    permission_classes = [Member]

    @extend_schema(
        operation_id="alert_rules_evaluate",
        request=None,
        parameters=[RULE_ID, *ERROR_HEADERS],
        responses={200: EvaluationSerializer, **errors_for(401, 403, 404, 429)},
        description="Evaluate the rule now (project admins). A state change is an event.",
    )
    def post(self, request: Request, pk: int) -> Response:
        rule = get_rule(request, pk, write=True)
        return Response(alerts.rule_evaluate(rule_id=rule.pk))


class AlertRuleEventsView(APIView):
    permission_classes = [Member]

    @extend_schema(
        operation_id="alert_rules_events",
        parameters=[RULE_ID, *ERROR_HEADERS],
        responses={200: AlertEventSerializer(many=True), **errors_for(401, 403, 404, 429)},
        description="The rule's state changes, newest first (the latest 200).",
    )
    def get(self, request: Request, pk: int) -> Response:
        query_params(request, set())
        rule = get_rule(request, pk)
        events = AlertEvent.objects.filter(rule=rule).order_by("-created_at", "-id")[:200]
        return Response([alerts.event_document(e) for e in events])
