"""Audits in the admin (report page with its SVG chart, side-by-side comparison) and on the
command line (``manage.py audit``)."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from feedback.models import Membership
from labeling.models import Audit, Queue
from labeling.payloads.audits import audit_request
from labeling.services.audits import audit_create
from tests.labeling.test_audits import CLASSES, load_rows
from tests.labeling.test_audits_api import disparity_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def audit(project):
    queue = Queue.objects.create(project=project, name="loans", label_choices=CLASSES)
    load_rows(project, queue, disparity_rows())
    return audit_create(
        project=project,
        request=audit_request(
            {
                "project": project.slug,
                "source": {"queue": queue.pk},
                "segments": ["locale"],
                "positive_label": "approve",
            }
        ),
    )


@pytest.fixture
def scientist_client(project, make_reviewer):
    client = Client()
    client.force_login(make_reviewer("dana", role=Membership.Role.DATA_SCIENTIST))
    return client


SVG = "{http://www.w3.org/2000/svg}"


def chart(page: str) -> ET.Element:
    start = page.index('<svg xmlns="http://www.w3.org/2000/svg"')
    return ET.fromstring(page[start : page.index("</svg>", start) + 6])  # well-formed XML


def segment_group(svg: ET.Element, label: str) -> ET.Element:
    groups = [g for g in svg.iter(f"{SVG}g") if g.get("data-segment") == label]
    assert len(groups) == 1, f"no group for {label}"
    return groups[0]


def test_the_report_page_draws_the_flagged_segment(scientist_client, audit):
    response = scientist_client.get(f"/admin/labeling/audit/{audit.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    svg = chart(page)
    flagged = segment_group(svg, "locale=de-DE")
    assert flagged.get("class") == "segment flagged worse"
    bar = flagged.find(f"{SVG}rect")
    assert bar.get("class") == "bar" and bar.get("fill") == "#ba2121"
    whisker = flagged.find(f"{SVG}g")
    assert whisker.get("class") == "whisker"
    assert "▲ worse" in "".join(flagged.itertext())
    # The whisker spans the stored interval on the chart's scale (0 to 40 % here).
    metric = next(s for s in audit.result["segments"] if s["label"] == "locale=de-DE")
    error = metric["metrics"]["error_rate"]
    line = whisker.find(f"{SVG}line")
    assert float(line.get("x1")) == pytest.approx(240 + 460 * error["ci_low"] / 0.4, abs=0.01)
    assert float(line.get("x2")) == pytest.approx(240 + 460 * error["ci_high"] / 0.4, abs=0.01)
    assert float(bar.get("width")) == pytest.approx(460 * error["value"] / 0.4, abs=0.01)
    plain = segment_group(svg, "locale=en-US")
    assert plain.find(f"{SVG}rect").get("fill") != "#ba2121"
    insufficient = segment_group(svg, "locale=xx")
    assert "insufficient" in insufficient.get("class")
    assert insufficient.find(f"{SVG}rect") is None
    reference = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "reference"]
    assert reference[0].find(f"{SVG}line").get("stroke-dasharray") == "5,3"
    # The table: worst flagged first, insufficient last.
    table = page[page.index('<table id="segments">') :]
    order = [table.index(label) for label in ("locale=de-DE", "locale=en-US", "locale=xx")]
    assert order == sorted(order)
    assert "insufficient (under min_n = 30)" in table
    assert f"/api/v1/audits/{audit.pk}/report?format=md" in page
    assert not list(svg.iter(f"{SVG}script"))


def test_the_report_page_switches_figures(scientist_client, audit):
    response = scientist_client.get(
        f"/admin/labeling/audit/{audit.pk}/change/", {"metric": "selection_rate"}
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "Selection rate by segment" in page
    assert "By segment: selection rate" in page


def test_the_list_and_a_comparison(scientist_client, audit, project):
    queue = Queue.objects.create(project=project, name="v2", label_choices=CLASSES)
    load_rows(project, queue, disparity_rows(bad="en-US"), prefix="v2")
    later = audit_create(
        project=project,
        request=audit_request(
            {"project": project.slug, "source": {"queue": queue.pk}, "segments": ["locale"]}
        ),
    )

    listing = scientist_client.get("/admin/labeling/audit/")
    compare = scientist_client.get("/admin/labeling/audit/compare/", {"a": audit.pk, "b": later.pk})
    action = scientist_client.post(
        "/admin/labeling/audit/",
        {"action": "compare_selected", "_selected_action": [audit.pk, later.pk]},
    )

    assert listing.status_code == 200
    assert f"/admin/labeling/audit/{later.pk}/change/" in listing.content.decode()
    assert compare.status_code == 200
    page = compare.content.decode()
    row = re.search(r"<td>locale=en-US</td>(.*?)</tr>", page, re.S).group(1)
    assert "+20.0 pts" in row
    assert 'class="real"' in page
    assert action.status_code == 302
    assert action["Location"].endswith(f"compare/?a={audit.pk}&b={later.pk}")


def test_reviewers_and_other_projects_see_no_audits(audit, make_reviewer, other_project):
    reviewer = Client()
    reviewer.force_login(make_reviewer("rob", role=Membership.Role.REVIEWER))
    from feedback.services.projects import membership_grant

    outsider = Client()
    outsider.force_login(
        membership_grant(project=other_project, username="olga", role="data_scientist").user
    )

    # The report page answers 404 to whoever may not read it, exactly as for an audit that
    # does not exist: the status must not tell a reviewer or an outsider that it exists.
    for person in (reviewer, outsider):
        assert person.get(f"/admin/labeling/audit/{audit.pk}/change/").status_code == 404
        assert person.get(f"/admin/labeling/audit/{audit.pk + 1000}/change/").status_code == 404
    assert reviewer.get("/admin/labeling/audit/").status_code == 403
    assert "locale=de-DE" not in outsider.get("/admin/labeling/audit/").content.decode()
    compare = outsider.get("/admin/labeling/audit/compare/", {"a": audit.pk, "b": audit.pk})
    assert compare.status_code == 404


# --- manage.py audit --------------------------------------------------------------------------


def test_the_command_runs_an_audit_and_prints_markdown(project):
    queue = Queue.objects.create(project=project, name="loans", label_choices=CLASSES)
    load_rows(project, queue, disparity_rows())
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "audit",
        "--project",
        project.slug,
        "--queue",
        str(queue.pk),
        "--segments",
        "locale,device",
        "--intersectional",
        "--positive-label",
        "approve",
        "--reference",
        "locale=en-US",
        stdout=out,
        stderr=err,
    )

    audit = Audit.objects.get()
    assert audit.status == "done" and audit.params["reference"] == {"locale": "en-US"}
    markdown = out.getvalue()
    assert markdown.startswith("## Fairness audit: error rate by locale, device")
    assert "against locale=en-US" in markdown
    assert err.getvalue() == ""  # no bar when stderr is not a terminal
    shown = io.StringIO()
    call_command("audit", "--show", str(audit.pk), "--format", "json", stdout=shown)
    assert json.loads(shown.getvalue())["id"] == audit.pk


def test_the_command_refuses_bad_input_by_name(project):
    queue = Queue.objects.create(project=project, name="loans")

    with pytest.raises(CommandError, match=r"segments\[0\]"):
        call_command(
            "audit", "--project", project.slug, "--queue", str(queue.pk), "--segments", "a b"
        )
    with pytest.raises(CommandError, match="No project"):
        call_command("audit", "--project", "nope", "--queue", "1", "--segments", "a")
    assert Audit.objects.count() == 0


def test_the_progress_bar_draws_on_a_terminal():
    from labeling.management.commands.audit import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    from django.core.management.base import OutputWrapper

    stream = Terminal()
    bar = ProgressBar(OutputWrapper(stream))
    bar(0.5, "aggregating")
    bar(1.0, "done")

    drawn = stream.getvalue()
    assert "\r[###############...............]  50%  aggregating" in drawn
    assert "\r[##############################] 100%  done" in drawn and drawn.endswith("\n")


# --- direction, empty audits, comparison, creation ---------------------------------------------


def test_better_and_worse_look_different_in_chart_table_and_report(project, scientist_client):
    # given: de-DE is worse than overall, en-US (10 % against about 15 %) better
    queue = Queue.objects.create(project=project, name="loans", label_choices=CLASSES)
    load_rows(project, queue, disparity_rows())
    audit = audit_create(
        project=project,
        request=audit_request(
            {
                "project": project.slug,
                "source": {"queue": queue.pk},
                "segments": ["locale"],
                "tolerance": 0.03,
            }
        ),
    )
    directions = {
        s["label"]: s["metrics"]["error_rate"]["direction"] for s in audit.result["segments"]
    }
    assert directions["locale=de-DE"] == "worse" and directions["locale=en-US"] == "better"

    page = scientist_client.get(f"/admin/labeling/audit/{audit.pk}/change/").content.decode()

    # the chart: red and "worse", green and "better"
    svg = chart(page)
    worse, better = segment_group(svg, "locale=de-DE"), segment_group(svg, "locale=en-US")
    assert worse.get("class") == "segment flagged worse"
    assert better.get("class") == "segment flagged better"
    assert worse.find(f"{SVG}rect").get("fill") == "#ba2121"
    assert better.find(f"{SVG}rect").get("fill") == "#2e7d32"
    assert "▲ worse" in "".join(worse.itertext())
    assert "▼ better" in "".join(better.itertext())
    # the table: rows coloured by direction, with the word
    table = page[page.index('<table id="segments">') :]
    assert '<tr class="flagged flagged-worse">' in table
    assert '<tr class="flagged flagged-better">' in table
    assert "error rate (better)" in table and "error rate (worse)" in table
    # the Markdown report says it in words
    report = scientist_client.get(f"/api/v1/audits/{audit.pk}/report", {"format": "md"})
    text = report.content.decode()
    assert "**better**: error rate 10.0%" in text
    assert "**worse**: error rate 30.0%" in text
    assert "| error rate (better) |" in text


def test_an_audit_of_no_rows_says_so(project, scientist_client):
    queue = Queue.objects.create(project=project, name="empty", label_choices=CLASSES)
    audit = audit_create(
        project=project,
        request=audit_request(
            {"project": project.slug, "source": {"queue": queue.pk}, "segments": ["x"]}
        ),
    )

    report = scientist_client.get(f"/api/v1/audits/{audit.pk}/report", {"format": "md"})
    page = scientist_client.get(f"/admin/labeling/audit/{audit.pk}/change/").content.decode()

    text = report.content.decode()
    assert "the audit read 0 rows" in text
    assert "Nothing to flag: the audit read no labeled rows." in text
    assert "None:" not in text and "- (" not in text and "CI ;" not in text
    assert 'id="no-rows"' in page and "Overall (0 rows)" in page


def test_the_comparison_takes_segment_order_as_the_same_and_shows_no_reprs(
    project, scientist_client
):
    queue = Queue.objects.create(project=project, name="loans", label_choices=CLASSES)
    load_rows(project, queue, disparity_rows())
    a = audit_create(
        project=project,
        request=audit_request(
            {
                "project": project.slug,
                "source": {"queue": queue.pk},
                "segments": ["locale", "device"],
                "min_n": 5,
            }
        ),
    )
    b = audit_create(
        project=project,
        request=audit_request(
            {
                "project": project.slug,
                "source": {"queue": queue.pk},
                "segments": ["device", "locale"],
                "min_n": 5,
                "intersectional": True,
            }
        ),
    )

    page = scientist_client.get(
        "/admin/labeling/audit/compare/", {"a": a.pk, "b": b.pk}
    ).content.decode()

    assert "segments:" not in page  # the same keys in another order are the same
    assert "intersectional: no in a, yes in b" in page
    assert "[&#x27;" not in page and "&#x27;" not in page.split('id="comparison"')[0]
    # each segment of a is matched in b: a change, not a "-"
    row = re.search(r"<td>locale=de-DE</td>(.*?)</tr>", page, re.S).group(1)
    assert "+0.0 pts" in row


def test_an_audit_is_run_from_the_admin_through_the_service(project, scientist_client):
    queue = Queue.objects.create(project=project, name="loans", label_choices=CLASSES)
    load_rows(project, queue, disparity_rows())

    form = scientist_client.get("/admin/labeling/audit/add/")
    assert form.status_code == 200
    assert f'value="queue:{queue.pk}"' in form.content.decode()

    refused = scientist_client.post(
        "/admin/labeling/audit/add/",
        {
            "source": f"queue:{queue.pk}",
            "segments": "locale",
            "positive_label": "maybe",
            "reference": "overall",
            "min_n": 30,
            "tolerance": 0.05,
            "confidence": 0.95,
            "weighted": "on",
        },
    )
    assert refused.status_code == 200
    assert "One of the source&#x27;s labels: approve, deny." in refused.content.decode()
    assert not Audit.objects.exists()

    response = scientist_client.post(
        "/admin/labeling/audit/add/",
        {
            "source": f"queue:{queue.pk}",
            "segments": "locale, device",
            "positive_label": "approve",
            "reference": '{"locale": "en-US"}',
            "min_n": 30,
            "tolerance": 0.05,
            "confidence": 0.95,
            "weighted": "on",
        },
    )

    audit = Audit.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/labeling/audit/{audit.pk}/change/"
    assert audit.status == Audit.Status.DONE
    assert audit.params["segments"] == ["locale", "device"]
    assert audit.params["reference"] == {"locale": "en-US"}
    assert audit.params["positive_label"] == "approve"
    assert audit.requested_by.username == "dana"
