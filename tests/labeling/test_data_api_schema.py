"""The OpenAPI schema at ``/api/schema/`` tells the truth about gold sets, exports and audits.

Schemathesis loads the schema from the app and sends generated requests, valid and invalid, to
every gold-set, export and audit operation with a real project API key (``data`` scope), against
real data: a queue of completed, labeled items with predictions, segments and consensus; a gold
set with a published version and a draft; a done export; a done audit. Each response must be no
5xx, have a documented status code and content type, and match the documented body; invalid
input must be refused. Hand-written cases below pin the inputs the run found (each once a 500 or
a mismatch), validated against the same schema.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from feedback.services.keys import apikey_create
from labeling.exports.request import export_request
from labeling.models import Audit, Export, QueueItem
from labeling.payloads.audits import audit_request
from labeling.payloads.gold import gold_item_input
from labeling.services.audits import audit_create
from labeling.services.exports import export_build, export_create
from labeling.services.goldsets import (
    gold_item_add,
    gold_item_promote,
    goldset_create,
    goldset_version_create_draft,
    goldset_version_publish,
)

from .test_exports import make_labeled

DATA_OPERATIONS = {
    "goldsets_list": ("GET", "/api/v1/goldsets"),
    "goldsets_create": ("POST", "/api/v1/goldsets"),
    "goldsets_versions_list": ("GET", "/api/v1/goldsets/{slug}/versions"),
    "goldsets_versions_create": ("POST", "/api/v1/goldsets/{slug}/versions"),
    "goldsets_items_list": ("GET", "/api/v1/goldsets/{slug}/versions/{number}/items"),
    "goldsets_items_add": ("POST", "/api/v1/goldsets/{slug}/versions/{number}/items"),
    "goldsets_items_update": ("PATCH", "/api/v1/goldsets/{slug}/versions/{number}/items"),
    "goldsets_items_remove": ("DELETE", "/api/v1/goldsets/{slug}/versions/{number}/items"),
    "goldsets_versions_publish": ("POST", "/api/v1/goldsets/{slug}/versions/{number}/publish"),
    "goldsets_versions_diff": ("GET", "/api/v1/goldsets/{slug}/versions/{number}/diff"),
    "goldsets_versions_export": ("GET", "/api/v1/goldsets/{slug}/versions/{number}/export"),
    "exports_create": ("POST", "/api/v1/exports"),
    "exports_retrieve": ("GET", "/api/v1/exports/{id}"),
    "exports_download": ("GET", "/api/v1/exports/{id}/download"),
    "audits_list": ("GET", "/api/v1/audits"),
    "audits_create": ("POST", "/api/v1/audits"),
    "audits_retrieve": ("GET", "/api/v1/audits/{id}"),
    "audits_report": ("GET", "/api/v1/audits/{id}/report"),
    "audits_compare": ("GET", "/api/v1/audits/{id}/compare"),
}
GOLD_SLUG = "eval"
GOLD_KEYS = ["hand-a", "hand-b"]
CATEGORY_SLUGS = ["incorrect", "unsafe", "incomplete"]
SEGMENT_KEYS = ["locale", "device", "age_band"]

schema = schemathesis.openapi.from_wsgi("/api/schema/", application).include(
    operation_id=list(DATA_OPERATIONS)
)
# The test sends a real key itself; a generated Authorization header would be overwritten.
schema.config.generation.update(with_security_parameters=False)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


# --- the data --------------------------------------------------------------------------------


def gold_item(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "input": {"text": f"question {key}"},
        "output": {"decision": "approve"},
        "expected": {"verdict": "correct", "label": "approve", "categories": []},
        "segment": {"locale": "de-DE", "device": "ios"},
    }


def seed(project) -> dict[str, Any]:
    """A labeled queue, a gold set (v1 published, v2 a draft), a done export, a done audit."""
    from django.contrib.auth import get_user_model

    reviewer = get_user_model().objects.create_user("schema-reviewer", password="pw-123456")
    queue = make_labeled(project, count=40, reviewer=reviewer)
    completed = list(
        QueueItem.objects.filter(queue=queue, status=QueueItem.Status.COMPLETE)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    gold_set = goldset_create(project=project, slug=GOLD_SLUG, name="Eval")
    v1 = gold_set.versions.get()
    for key in GOLD_KEYS:
        gold_item_add(version=v1, item=gold_item_input(gold_item(key)))
    gold_item_promote(version=v1, item_id=completed[0])  # labeled, agreement 1.0
    goldset_version_publish(version=v1)
    v2 = goldset_version_create_draft(gold_set=gold_set)
    gold_item_add(version=v2, item=gold_item_input(gold_item("draft-c")))

    export = export_create(
        project=project, request=export_request({"queue": queue.pk, "format": "jsonl"})
    )
    export = export_build(export_id=export.pk)
    assert export.status == Export.Status.DONE, export.error
    audit = audit_create(
        project=project,
        request=audit_request(
            {
                "project": project.slug,
                "source": {"queue": queue.pk},
                "segments": ["locale", "device"],
                "intersectional": True,
                "positive_label": "approve",
                "min_n": 5,
            }
        ),
        run="now",
    )
    assert audit.status == Audit.Status.DONE, audit.error
    return {
        "queue": queue,
        "items": completed,
        "export": export,
        "audit": audit,
        "versions": {v1.number: v1, v2.number: v2},
    }


@pytest.fixture
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


@pytest.fixture
def data_world(settings, project, _media):
    """A project with seeded data and a ``data`` key; the rate limit out of the way."""
    settings.REDRESS_INGEST_RATE = "100000/minute"
    _, raw = apikey_create(project=project, scopes=["data"], name="schemathesis")
    auth = {"Authorization": f"Bearer {raw}"}
    return {"project": project, "key": raw, "auth": auth, **seed(project)}


@pytest.fixture(autouse=True)
def _one_connection_per_test(request):
    """Keep the test's connection across requests in non-transactional tests (schemathesis
    calls the WSGI application directly, whose signals would close it); see test_openapi."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction"):
        yield
        return
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


# --- hooks: point generated requests at stored rows ------------------------------------------


def _pick(value: Any, choices: list[Any]) -> Any:
    """A stored value chosen by the generated one (deterministic, spread over ``choices``)."""
    return choices[zlib.crc32(repr(value).encode()) % len(choices)]


def _kept(value: Any) -> bool:
    """One generated reference in four is sent as generated (unknown ids, huge numbers)."""
    return zlib.crc32(repr(value).encode()) % 4 == 0


def _is_json_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and not _kept(value)


def _is_int(value: Any) -> bool:
    """An integer, or (path parameters come as text) an integer's digits."""
    if isinstance(value, str):
        return value.isascii() and value.lstrip("-").isdigit() and not _kept(value)
    return _is_json_int(value)


def with_audit_choices(body: dict[str, Any]) -> None:
    """Segment keys of the data, distinct; a class of the queue; a reference among them."""
    segments = body.get("segments")
    if isinstance(segments, list) and all(isinstance(key, str) for key in segments):
        picked = [_pick(key, SEGMENT_KEYS) for key in segments]
        body["segments"] = list(dict.fromkeys(picked)) or segments
    if isinstance(body.get("positive_label"), str):
        body["positive_label"] = _pick(body["positive_label"], ["approve", "deny"])
    reference = body.get("reference")
    if isinstance(reference, dict) and reference and isinstance(body.get("segments"), list):
        keys = [key for key in body["segments"] if isinstance(key, str)][:1]
        body["reference"] = {key: "de-DE" for key in keys} or "overall"


def with_stored_references(case, world: dict[str, Any]) -> None:
    """Replace well-typed generated references by stored ones, so that requests reach the
    code behind the lookups. Ill-typed values are left alone (they stay negative cases);
    reading ``case.meta`` re-classifies the edited case."""
    operation = case.operation.definition.raw["operationId"]
    slug, numbers = world["project"].slug, sorted(world["versions"])
    path = case.path_parameters or {}
    if isinstance(path.get("slug"), str):
        path["slug"] = GOLD_SLUG
    if _is_int(path.get("number")):
        path["number"] = _pick(path["number"], numbers)
    if _is_int(path.get("id")):
        path["id"] = world["audit" if operation.startswith("audits") else "export"].pk
    query = case.query or {}
    if isinstance(query.get("project"), str):
        query["project"] = slug
    if _is_int(query.get("against")):
        if operation == "goldsets_versions_diff":
            query["against"] = _pick(query["against"], numbers)
        elif operation == "audits_compare":
            query["against"] = world["audit"].pk
    keys = [*GOLD_KEYS, "draft-c", "labeled-00000"]
    if isinstance(query.get("key"), str):
        query["key"] = _pick(query["key"], keys)
    elif isinstance(query.get("key"), list):
        query["key"] = [_pick(k, keys) if isinstance(k, str) else k for k in query["key"]]
    body = case.body if isinstance(case.body, dict) else {}
    if isinstance(body.get("project"), str):
        body["project"] = slug
    if operation == "exports_create" and _is_json_int(body.get("queue")):
        body["queue"] = world["queue"].pk
    source = body.get("source") if operation == "audits_create" else None
    if isinstance(source, dict):
        for name in ("queue", "export"):
            if _is_json_int(source.get(name)):
                source[name] = world[name].pk
        if isinstance(source.get("goldset"), str):
            source["goldset"] = GOLD_SLUG
        if _is_json_int(source.get("version")):
            source["version"] = numbers[0]
    if operation == "audits_create":
        with_audit_choices(body)
    if _is_json_int(body.get("from_item")):
        body["from_item"] = _pick(body["from_item"], world["items"])
    expected = body.get("expected")
    if isinstance(expected, dict) and isinstance(expected.get("categories"), list):
        expected["categories"] = [
            _pick(c, CATEGORY_SLUGS) if isinstance(c, str) else c for c in expected["categories"]
        ]
    _ = case.meta  # reading it re-classifies the edited case


@pytest.fixture
def statuses():
    """Status codes a generated run saw; it must have reached the API, not just its 401s."""
    seen: Counter[int] = Counter()
    yield seen
    past_auth = sum(count for code, count in seen.items() if code not in (401, 405))
    assert past_auth, f"the key was never accepted: {dict(seen)}"


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI failures reproduce locally
    suppress_health_check=[
        hypothesis.HealthCheck.function_scoped_fixture,  # `data_world` is set up per operation
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.filter_too_much,
    ],
)
def test_data_operations_conform_to_schema(case, data_world, statuses):
    with_stored_references(case, data_world)
    response = case.call_and_validate(headers=data_world["auth"], checks=CHECKS)
    statuses[response.status_code] += 1


# --- hand-written cases, validated against the same schema ---------------------------------


def call(operation_id: str, world: dict[str, Any], *, expect: int, **case_kwargs: Any):
    """Send one request through schemathesis with the data key; check it against the schema."""
    method, path = DATA_OPERATIONS[operation_id]
    case = schema[path][method].Case(**case_kwargs)
    response = case.call(headers=world["auth"])
    assert response.status_code == expect, response.text
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    return response


def fields(response) -> list[tuple[str | None, str]]:
    return [(error["field"], error["code"]) for error in response.json()["errors"]]


@pytest.mark.django_db
def test_the_data_fixture_holds_what_the_run_needs(data_world):
    project, export, audit = data_world["project"], data_world["export"], data_world["audit"]
    versions = call(
        "goldsets_versions_list", data_world, expect=200, path_parameters={"slug": GOLD_SLUG}
    )
    items = call(
        "goldsets_items_list",
        data_world,
        expect=200,
        path_parameters={"slug": GOLD_SLUG, "number": 1},
    )
    exported = call("exports_retrieve", data_world, expect=200, path_parameters={"id": export.pk})
    call("exports_download", data_world, expect=200, path_parameters={"id": export.pk})
    audited = call("audits_retrieve", data_world, expect=200, path_parameters={"id": audit.pk})
    for fmt in ("jsonl", "csv", "parquet"):
        call(
            "goldsets_versions_export",
            data_world,
            expect=200,
            path_parameters={"slug": GOLD_SLUG, "number": 1},
            query={"format": fmt},
        )
    for fmt in ("json", "csv", "md"):
        call(
            "audits_report",
            data_world,
            expect=200,
            path_parameters={"id": audit.pk},
            query={"format": fmt},
        )

    assert [(v["number"], v["status"]) for v in versions.json()] == [(1, "published"), (2, "draft")]
    assert [i["key"] for i in items.json()] == ["hand-a", "hand-b", "labeled-00000"]
    assert items.json()[2]["lineage"]["item_id"] == data_world["items"][0]
    assert (exported.json()["status"], exported.json()["rows"]) == ("done", 40)
    assert audited.json()["status"] == "done" and audited.json()["project"] == project.slug


# --- inputs the generated run found (each was a mismatch with the schema or a wrong answer) ---


@pytest.mark.django_db
def test_an_export_without_project_is_the_keys_own(data_world):
    # The schema required "project", which a key may leave out (or send as null).
    for body in ({"format": "csv"}, {"format": "csv", "project": None}):
        call("exports_create", data_world, expect=202, body=body)


@pytest.mark.django_db
def test_an_export_with_null_filter_and_split_takes_the_defaults(data_world):
    # Accepted, where the schema said objects (and non-blank strings): now documented.
    body = {
        "format": "jsonl",
        "filter": {"model_version": "", "completed_after": None, "segment": {"locale": ""}},
        "split": None,
    }
    call("exports_create", data_world, expect=202, body=body)
    call("exports_create", data_world, expect=202, body={"format": "jsonl", "filter": None})


@pytest.mark.django_db
@pytest.mark.parametrize("value", [{}, [None, None], False, 0])
def test_an_export_project_that_is_not_text_is_400_naming_it(data_world, value):
    # Was a 404 "No project {} of yours.": a malformed value, not an unknown project.
    response = call(
        "exports_create", data_world, expect=400, body={"format": "csv", "project": value}
    )
    assert fields(response) == [("project", "invalid_type")]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["slug", "name", "description", "project"])
def test_a_gold_set_field_that_is_not_text_is_400_naming_it(data_world, name):
    # Was 201, a gold set stored with slug "60809470560304472522752" (DRF turns numbers into text).
    body = {"slug": "numbers", name: 60809470560304472522752}
    response = call("goldsets_create", data_world, expect=400, body=body)
    assert fields(response) == [(name, "invalid_type")]


@pytest.mark.django_db
@pytest.mark.parametrize("body", [None, [], "", 0, False])
@pytest.mark.parametrize("operation_id", ["goldsets_versions_publish", "goldsets_versions_create"])
def test_a_notes_body_that_is_not_an_object_is_400(data_world, operation_id, body):
    # Was 200 (publish) / 409 (a draft exists): a JSON null or [] was read as "no body".
    path = (
        {"slug": GOLD_SLUG, "number": 2}
        if operation_id.endswith("publish")
        else {"slug": GOLD_SLUG}
    )
    response = call(operation_id, data_world, expect=400, path_parameters=path, body=body)
    assert fields(response) == [(None, "invalid_type")]
    assert (
        data_world["versions"][2].__class__.objects.get(pk=data_world["versions"][2].pk).status
        == "draft"
    )


@pytest.mark.django_db
def test_a_promotion_with_null_key_and_threshold_takes_the_defaults(data_world):
    # Accepted, where the schema said a string and a number: now documented as nullable.
    body = {"from_item": data_world["items"][7], "key": None, "min_agreement": None}
    created = call(
        "goldsets_items_add",
        data_world,
        expect=201,
        path_parameters={"slug": GOLD_SLUG, "number": 2},
        body=body,
    )
    assert created.json()["key"] == "labeled-00007"


@pytest.mark.django_db
def test_a_gold_item_with_null_segment_has_none(data_world):
    body = {**gold_item("nulls"), "input": None, "output": None, "segment": None}
    created = call(
        "goldsets_items_add",
        data_world,
        expect=201,
        path_parameters={"slug": GOLD_SLUG, "number": 2},
        body=body,
    )
    assert created.json()["segment"] == {}


# --- where the hand-written validators disagreed with the schema (one declaration since) -------


@pytest.mark.django_db
def test_a_blank_expected_verdict_with_a_label_is_accepted_as_documented(data_world):
    # The service took "" as "no verdict" where the schema allowed only the three verdicts and
    # a label of one character or more: the declaration now says what is accepted.
    body = {**gold_item("blank-verdict"), "expected": {"verdict": "", "label": "approve"}}
    created = call(
        "goldsets_items_add",
        data_world,
        expect=201,
        path_parameters={"slug": GOLD_SLUG, "number": 2},
        body=body,
    )
    assert created.json()["expected"] == {"verdict": None, "label": "approve", "categories": []}


@pytest.mark.django_db
def test_more_than_twenty_expected_categories_are_400_naming_them(data_world):
    # The service refused them ("too_many") where the schema set no bound.
    body = {**gold_item("many"), "expected": {"verdict": "correct", "categories": ["x"] * 21}}
    response = call(
        "goldsets_items_add",
        data_world,
        expect=400,
        path_parameters={"slug": GOLD_SLUG, "number": 2},
        body=body,
    )
    assert [field for field, _ in fields(response)] == ["expected.categories"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # The schema allowed a tolerance of 1 and any min_n, and listed segments without saying
        # they are distinct; each was refused by the service.
        ({"tolerance": 1}, [("tolerance", "out_of_range")]),
        ({"min_n": 1_000_001}, [("min_n", "out_of_range")]),
        ({"segments": ["locale", "locale"]}, [("segments[1]", "duplicate")]),
    ],
)
def test_audit_bounds_the_schema_now_states(data_world, change, expected):
    body = {
        "project": data_world["project"].slug,
        "source": {"queue": data_world["queue"].pk},
        "segments": ["locale"],
        **change,
    }
    response = call("audits_create", data_world, expect=400, body=body)
    assert fields(response) == expected
    properties = schema.raw_schema["components"]["schemas"]["AuditCreateRequest"]["properties"]
    assert properties["tolerance"]["exclusiveMaximum"] is True
    assert properties["min_n"]["maximum"] == 1_000_000
    assert properties["segments"]["uniqueItems"] is True


HUGE = 10**30  # past every database's integer range


# Values that reach the database (huge ids, NUL characters, date-times out of range in UTC):
# each is refused with a 4xx naming the field, never a 500.
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("operation_id", "parts", "expected"),
    [
        pytest.param(
            "exports_retrieve", {"path_parameters": {"id": HUGE}}, (404, "id"), id="export-id"
        ),
        pytest.param(
            "exports_download", {"path_parameters": {"id": HUGE}}, (404, "id"), id="download-id"
        ),
        pytest.param(
            "audits_retrieve", {"path_parameters": {"id": HUGE}}, (404, "id"), id="audit-id"
        ),
        pytest.param(
            "audits_report", {"path_parameters": {"id": HUGE}}, (404, "id"), id="report-id"
        ),
        pytest.param(
            "audits_compare",
            {"path_parameters": {"id": HUGE}, "query": {"against": 1}},
            (404, "id"),
            id="compare-id",
        ),
        pytest.param(
            "audits_compare",
            {"path_parameters": {"id": "AUDIT"}, "query": {"against": HUGE}},
            (404, "id"),
            id="compare-against",
        ),
        pytest.param(
            "goldsets_items_list",
            {"path_parameters": {"slug": GOLD_SLUG, "number": HUGE}},
            (404, "number"),
            id="gold-number",
        ),
        pytest.param(
            "goldsets_versions_export",
            {"path_parameters": {"slug": GOLD_SLUG, "number": HUGE}},
            (404, "version"),
            id="snapshot-number",
        ),
        pytest.param(
            "audits_create",
            {"body": {"project": "PROJECT", "source": {"queue": HUGE}, "segments": ["locale"]}},
            (404, "source.queue"),
            id="audit-source-queue",
        ),
        pytest.param(
            "audits_create",
            {"body": {"project": "PROJECT", "source": {"export": HUGE}, "segments": ["locale"]}},
            (404, "source.export"),
            id="audit-source-export",
        ),
        pytest.param(
            "audits_create",
            {
                "body": {
                    "project": "PROJECT",
                    "source": {"goldset": GOLD_SLUG, "version": HUGE, "model_version": "v1"},
                    "segments": ["locale"],
                }
            },
            (404, "source.version"),
            id="audit-source-version",
        ),
        pytest.param(
            "goldsets_items_add",
            {"path_parameters": {"slug": GOLD_SLUG, "number": 2}, "body": {"from_item": 2**63 - 1}},
            (404, "from_item"),
            id="promote-from-item",
        ),
        pytest.param(
            "exports_create",
            {"body": {"format": "csv", "queue": HUGE}},
            (404, "queue"),
            id="export-queue",
        ),
        pytest.param(
            "exports_create",
            {"body": {"format": "csv", "filter": {"completed_after": "9999-12-31T23:59:59-14:00"}}},
            (400, "filter.completed_after"),
            id="export-after-9999",
        ),
        pytest.param(
            "exports_create",
            {
                "body": {
                    "format": "csv",
                    "filter": {"completed_before": "0001-01-01T00:00:00+14:00"},
                }
            },
            (400, "filter.completed_before"),
            id="export-before-year-1",
        ),
        pytest.param(
            "audits_create",
            {"body": {"project": "a\x00", "source": {"queue": 1}, "segments": ["locale"]}},
            (400, "project"),
            id="audit-project-nul",
        ),
        pytest.param(
            "audits_list", {"query": {"project": "a\x00"}}, (400, "project"), id="audits-list-nul"
        ),
        pytest.param(
            "goldsets_versions_export",
            {"path_parameters": {"slug": GOLD_SLUG, "number": 1}, "query": {"project": "a\x00"}},
            (400, "project"),
            id="snapshot-project-nul",
        ),
        pytest.param(
            "audits_create",
            {
                "body": {
                    "project": "PROJECT",
                    "source": {"queue": "QUEUE", "model_version": "v\x00"},
                    "segments": ["locale"],
                }
            },
            (400, "source.model_version"),
            id="audit-model-version-nul",
        ),
        pytest.param(
            "audits_create",
            {
                "body": {
                    "project": "PROJECT",
                    "source": {"queue": "QUEUE"},
                    "segments": ["locale"],
                    "reference": {"locale": "d\x00"},
                }
            },
            (400, "reference.locale"),
            id="audit-reference-nul",
        ),
        pytest.param(
            "exports_create",
            {"body": {"format": "csv", "filter": {"model_version": "v\x00"}}},
            (400, "filter.model_version"),
            id="export-model-version-nul",
        ),
        pytest.param(
            "exports_create",
            {"body": {"format": "csv", "filter": {"segment": {"locale": "d\x00"}}}},
            (400, "filter.segment.locale"),
            id="export-segment-nul",
        ),
        pytest.param(
            "goldsets_create",
            {"body": {"slug": "nul", "name": "a\x00"}},
            (400, "name"),
            id="goldset-name-nul",
        ),
        pytest.param(
            "goldsets_items_add",
            {
                "path_parameters": {"slug": GOLD_SLUG, "number": 2},
                "body": {**gold_item("k"), "key": "k\x00"},
            },
            (400, "key"),
            id="gold-key-nul",
        ),
        pytest.param(
            "goldsets_items_add",
            {
                "path_parameters": {"slug": GOLD_SLUG, "number": 2},
                "body": {**gold_item("k"), "expected": {"verdict": "correct", "label": "a\x00"}},
            },
            (400, "expected.label"),
            id="gold-label-nul",
        ),
        pytest.param(
            "goldsets_items_update",
            {
                "path_parameters": {"slug": GOLD_SLUG, "number": 2},
                "query": {"key": "k\x00"},
                "body": {},
            },
            (400, "key"),
            id="gold-patch-key-nul",
        ),
        pytest.param(
            "goldsets_items_remove",
            {"path_parameters": {"slug": GOLD_SLUG, "number": 2}, "query": {"key": ["k\x00"]}},
            (400, "key"),
            id="gold-delete-key-nul",
        ),
        pytest.param(
            "goldsets_versions_publish",
            {"path_parameters": {"slug": GOLD_SLUG, "number": 2}, "body": {"notes": "n\x00"}},
            (400, "notes"),
            id="publish-notes-nul",
        ),
        pytest.param(
            "audits_compare",
            {"path_parameters": {"id": "AUDIT"}, "query": {"against": "AUDIT", "metric": "m\x00"}},
            (400, "metric"),
            id="compare-metric-nul",
        ),
    ],
)
def test_inputs_that_reach_the_database_are_refused_not_500(
    data_world, operation_id, parts, expected
):
    refs = {
        "AUDIT": data_world["audit"].pk,
        "QUEUE": data_world["queue"].pk,
        "PROJECT": data_world["project"].slug,
    }

    def resolve(value):
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return refs.get(value, value) if isinstance(value, str) else value

    parts = {name: resolve(value) for name, value in parts.items()}
    status, field = expected
    response = call(operation_id, data_world, expect=status, **parts)
    assert field in [error["field"] for error in response.json()["errors"]], response.text
