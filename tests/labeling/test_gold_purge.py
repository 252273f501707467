"""Published gold leaves only through ``goldset_purge``: whole versions, with a record of who
purged what and when, and never by TRUNCATE. The database's own guards (labeling migration
0005) are tried with raw SQL on PostgreSQL; the record and its admin page on both databases."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from labeling.models import GoldItem, GoldPurge, GoldSet, GoldSetVersion
from labeling.selectors.gold import gold_version_checksum
from labeling.services.goldsets import goldset_purge

from .test_goldsets import published, raw

pytestmark = pytest.mark.django_db


def txid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT txid_current()")
        return cursor.fetchone()[0]


def record_purge_of(gold_set: GoldSet) -> None:
    """What a hand-made purge would have to write: a record of this transaction."""
    GoldPurge.objects.create(
        project_slug=gold_set.project.slug,
        gold_set_id_purged=gold_set.pk,
        gold_set_slug=gold_set.slug,
        transaction_id=txid(),
    )


def commit_check() -> None:
    """Run the deferred (commit-time) constraint triggers now: the test never commits."""
    raw("SET CONSTRAINTS ALL IMMEDIATE")


# --- the record ------------------------------------------------------------------------------


def test_purge_writes_who_what_and_when(project, make_reviewer):
    version = published(project, keys=("a", "b", "c"))
    purger = make_reviewer("pia")

    counts = goldset_purge(gold_set=version.gold_set, actor=purger, reason="erasure request 17")

    record = GoldPurge.objects.get()
    assert counts == {"versions": 1, "items": 3, "record": record.pk}
    assert (record.project_id, record.project_slug, record.gold_set_slug) == (
        project.pk,
        project.slug,
        "eval",
    )
    assert record.gold_set_id_purged == version.gold_set_id
    assert record.versions == [
        {"number": 1, "status": "published", "item_count": 3, "checksum": version.checksum}
    ]
    assert (record.items_count, record.reason) == (3, "erasure request 17")
    assert (record.purged_by, record.purged_by_name) == (purger, "pia")
    assert record.purged_at is not None
    assert (record.transaction_id is not None) == (connection.vendor == "postgresql")
    assert not GoldSetVersion.objects.exists() and not GoldItem.objects.exists()


def test_the_record_outlives_the_person_and_the_project(project, make_reviewer):
    version = published(project)
    purger = make_reviewer("pia")
    goldset_purge(gold_set=version.gold_set, actor=purger)

    get_user_model().objects.filter(pk=purger.pk).delete()

    record = GoldPurge.objects.get()
    assert (record.purged_by_id, record.purged_by_name) == (None, "pia")


def test_the_admin_shows_purges_read_only(admin_client, project):
    version = published(project)
    goldset_purge(gold_set=version.gold_set, reason="made by mistake")
    record = GoldPurge.objects.get()

    listing = admin_client.get(reverse("admin:labeling_goldpurge_changelist"))
    page = admin_client.get(reverse("admin:labeling_goldpurge_change", args=[record.pk]))
    changed = admin_client.post(
        reverse("admin:labeling_goldpurge_change", args=[record.pk]), {"reason": "edited"}
    )
    deleted = admin_client.post(
        reverse("admin:labeling_goldpurge_delete", args=[record.pk]), {"post": "yes"}
    )

    assert listing.status_code == 200
    assert "made by mistake" in listing.content.decode()
    assert page.status_code == 200
    assert "<form" in page.content.decode() and 'name="reason"' not in page.content.decode()
    assert version.checksum[:12] in page.content.decode()
    assert changed.status_code == 403
    assert deleted.status_code == 403
    assert admin_client.get(reverse("admin:labeling_goldpurge_add")).status_code == 403
    record.refresh_from_db()
    assert record.reason == "made by mistake"


def test_only_data_roles_of_the_project_see_its_purges(
    client, project, other_project, make_reviewer
):
    from feedback.services.projects import membership_grant

    goldset_purge(gold_set=published(project).gold_set)
    goldset_purge(gold_set=published(other_project, slug="theirs").gold_set)
    ds = membership_grant(
        project=project, username="dana", role="data_scientist", password="pw-123456"
    ).user
    assert client.login(username=ds.username, password="pw-123456")

    listing = client.get(reverse("admin:labeling_goldpurge_changelist"))

    assert listing.status_code == 200
    assert [r.gold_set_slug for r in listing.context["cl"].result_list] == ["eval"]
    reviewer = make_reviewer("rex")
    client.force_login(reviewer)
    assert client.get(reverse("admin:labeling_goldpurge_changelist")).status_code == 403


# --- PostgreSQL: raw SQL ---------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    "table",
    ["labeling_golditem", "labeling_goldsetversion", "labeling_goldset", "feedback_project"],
)
def test_truncate_is_refused_directly_and_through_cascade(project, table):
    version = published(project)
    raw("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses pending FK checks of the test's rows

    with pytest.raises(IntegrityError, match="TRUNCATE of labeling_golditem would remove"):
        raw(f"TRUNCATE {table} CASCADE")

    version.refresh_from_db()
    assert version.items.count() == 2
    assert gold_version_checksum(version=version) == version.checksum


@pytest.mark.postgres
def test_truncate_is_allowed_without_published_gold(project):
    from labeling.services.goldsets import goldset_create

    draft = goldset_create(project=project, slug="wip").versions.get()
    raw("SET CONSTRAINTS ALL IMMEDIATE")

    raw("TRUNCATE labeling_golditem CASCADE")

    assert draft.items.count() == 0


@pytest.mark.postgres
def test_deleting_an_item_needs_a_record_of_this_transaction(project):
    version = published(project)
    with transaction.atomic():
        raw("SET LOCAL redress.gold_purge = 'on'")
        # a record, but of another (earlier) transaction: no
        GoldPurge.objects.create(
            project_slug=project.slug,
            gold_set_id_purged=version.gold_set_id,
            gold_set_slug="eval",
            transaction_id=txid() - 1,
        )
        with pytest.raises(IntegrityError, match="published gold is immutable"):
            raw("DELETE FROM labeling_golditem WHERE version_id = %s", [version.pk])
        transaction.set_rollback(True)

    with transaction.atomic():
        # a record of this transaction, but without the setting: no
        record_purge_of(version.gold_set)
        with pytest.raises(IntegrityError, match="published gold is immutable"):
            raw("DELETE FROM labeling_golditem WHERE version_id = %s", [version.pk])
        with pytest.raises(IntegrityError, match="cannot be deleted"):
            raw("DELETE FROM labeling_goldsetversion WHERE id = %s", [version.pk])
        transaction.set_rollback(True)

    assert version.items.count() == 2


@pytest.mark.postgres
def test_a_purge_of_one_item_fails_at_commit_the_version_must_go_whole(project):
    version = published(project)
    with transaction.atomic():
        raw("SET LOCAL redress.gold_purge = 'on'")
        record_purge_of(version.gold_set)
        one = version.items.order_by("key").first().pk

        assert raw("DELETE FROM labeling_golditem WHERE id = %s", [one]) == 1
        with pytest.raises(IntegrityError, match="checksum would no longer match"):
            commit_check()
        transaction.set_rollback(True)

    assert version.items.count() == 2
    assert gold_version_checksum(version=version) == version.checksum


@pytest.mark.postgres
def test_a_recorded_purge_of_whole_versions_passes_the_commit_check(project):
    version = published(project)
    kept = published(project, slug="kept")
    with transaction.atomic():
        raw("SET LOCAL redress.gold_purge = 'on'")
        record_purge_of(version.gold_set)

        assert raw("DELETE FROM labeling_golditem WHERE version_id = %s", [version.pk]) == 2
        assert raw("DELETE FROM labeling_goldsetversion WHERE id = %s", [version.pk]) == 1
        commit_check()  # no error: the version went whole
        # ...and the record names only its own set: the kept one stays frozen
        with pytest.raises(IntegrityError, match="published gold is immutable"):
            raw("DELETE FROM labeling_golditem WHERE version_id = %s", [kept.pk])
        transaction.set_rollback(True)


@pytest.mark.postgres
def test_the_service_purge_passes_the_commit_check(project):
    version = published(project)
    item_ids = list(version.items.values_list("pk", flat=True))
    with transaction.atomic():
        goldset_purge(gold_set=version.gold_set)
        commit_check()
        assert not GoldItem.objects.filter(pk__in=item_ids).exists()
    assert GoldPurge.objects.get().transaction_id is not None


# --- the command -----------------------------------------------------------------------------


def test_purge_goldset_command_records_the_operator(project):
    import getpass
    import io

    from django.core.management import CommandError, call_command

    from labeling.models import Export

    version = published(project, keys=("a", "b", "c"))
    export = Export.objects.create(project=project, format="jsonl", gold_version=version)
    with pytest.raises(CommandError, match="has exports of its versions"):
        call_command("purge_goldset", "eval", "--project", project.slug, "--reason", "gdpr 17")
    export.delete()
    with pytest.raises(CommandError, match="No gold set 'nope'"):
        call_command("purge_goldset", "nope", "--project", project.slug, "--reason", "x")

    out = io.StringIO()
    call_command(
        "purge_goldset", "eval", "--project", project.slug, "--reason", "gdpr 17", stdout=out
    )

    record = GoldPurge.objects.get()
    assert out.getvalue() == (
        f"Purged {project.slug}/eval: 1 versions, 3 items (purge record {record.pk})\n"
    )
    assert record.purged_by_name == f"manage.py purge_goldset ({getpass.getuser()})"
    assert record.reason == "gdpr 17"
    assert not GoldSet.objects.exists()
