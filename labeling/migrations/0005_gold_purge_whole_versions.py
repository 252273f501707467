"""Published gold leaves only whole, and only with a record; TRUNCATE cannot take it (PostgreSQL).

Migration 0003 let any session that said ``SET LOCAL redress.gold_purge = 'on'`` delete single
items of a published version (leaving its checksum stale), and TRUNCATE fired no trigger at all.
Now:

- **A purge needs its record.** Deleting an item of a published version, or the version row,
  needs the setting *and* a ``labeling_goldpurge`` row written in the same transaction
  (``transaction_id = txid_current()``) naming the version's gold set. ``goldset_purge`` writes
  that row first (who, what, when), so no published gold goes without a record of it.
- **Whole versions only.** A deferred constraint trigger checks, at commit, every item deleted
  from a published version (the item trigger marks its version in a transaction-local setting,
  ``redress.gold_purged_v<id>``): its version row must be gone by then. Deleting some items of a
  published version and keeping the version (a stale checksum) fails the commit.
- **No TRUNCATE.** A statement-level BEFORE TRUNCATE trigger on ``labeling_golditem`` refuses
  while any published version exists. PostgreSQL fires it also when the table is reached by
  CASCADE (``TRUNCATE labeling_goldsetversion / labeling_goldset / feedback_project ... CASCADE``),
  so those are refused too. ``manage.py flush`` (and the test suite's teardown of committed data)
  must purge published gold first.

Every refusal raises SQLSTATE 23001 (restrict_violation: Django's IntegrityError).
SQLite has no equivalent; the model layer (``labeling.models.gold``) guards it there.
"""

from importlib import import_module

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION redress_gold_purge_recorded(p_version_id bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT redress_gold_purging() AND EXISTS (
        SELECT 1
        FROM labeling_goldpurge p
        JOIN labeling_goldsetversion v ON v.gold_set_id = p.gold_set_id_purged
        WHERE v.id = p_version_id AND p.transaction_id = txid_current()
    )
$$;

CREATE OR REPLACE FUNCTION redress_golditem_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    version_status text;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT status INTO version_status FROM labeling_goldsetversion
            WHERE id = OLD.version_id FOR SHARE;
        IF version_status = 'published' THEN
            IF TG_OP = 'DELETE' AND redress_gold_purge_recorded(OLD.version_id) THEN
                -- Remembered for the commit-time check (golditem_whole_versions).
                PERFORM set_config('redress.gold_purged_v' || OLD.version_id, 'on', true);
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'gold item % (key %) belongs to published gold-set version %: '
                'published gold is immutable', OLD.id, OLD.key, OLD.version_id
                USING ERRCODE = 'restrict_violation',
                      HINT = 'Start a new draft version to change gold content; goldset_purge '
                             'removes a whole gold set and records it.';
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT status INTO version_status FROM labeling_goldsetversion
            WHERE id = NEW.version_id FOR SHARE;
        IF version_status = 'published' THEN
            RAISE EXCEPTION 'gold-set version % is published: its items are immutable',
                NEW.version_id
                USING ERRCODE = 'restrict_violation',
                      HINT = 'Start a new draft version to change gold content.';
        END IF;
        RETURN NEW;
    END IF;
    RETURN OLD;
END
$$;

CREATE OR REPLACE FUNCTION redress_goldversion_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'published' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF redress_gold_purge_recorded(OLD.id) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'gold-set version % is published and cannot be deleted', OLD.id
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Only goldset_purge removes it, with its gold set, and records it.';
    END IF;
    IF NEW.gold_set_id IS DISTINCT FROM OLD.gold_set_id
        OR NEW.number IS DISTINCT FROM OLD.number
        OR NEW.status IS DISTINCT FROM OLD.status
        OR NEW.parent_id IS DISTINCT FROM OLD.parent_id
        OR NEW.item_count IS DISTINCT FROM OLD.item_count
        OR NEW.checksum IS DISTINCT FROM OLD.checksum
        OR NEW.published_at IS DISTINCT FROM OLD.published_at THEN
        RAISE EXCEPTION 'gold-set version % is published: its content and status are frozen',
            OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION redress_golditem_whole_versions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Only items deleted while their version was published (a purge) are checked: a draft's
    -- item removed before the draft is published in the same transaction is fine.
    IF coalesce(current_setting('redress.gold_purged_v' || OLD.version_id, true), '') = 'on'
        AND EXISTS (SELECT 1 FROM labeling_goldsetversion
                    WHERE id = OLD.version_id AND status = 'published') THEN
        RAISE EXCEPTION 'gold item % of published gold-set version % was deleted but the '
            'version was kept: its checksum would no longer match its items', OLD.id,
            OLD.version_id
            USING ERRCODE = 'restrict_violation',
                  HINT = 'A purge removes whole versions (goldset_purge).';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION redress_golditem_no_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM labeling_goldsetversion WHERE status = 'published') THEN
        RAISE EXCEPTION 'TRUNCATE of % would remove published gold', TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Purge the gold sets first (goldset_purge): it removes whole '
                         'versions and records who did it.';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS golditem_whole_versions ON labeling_golditem;
CREATE CONSTRAINT TRIGGER golditem_whole_versions
    AFTER DELETE ON labeling_golditem
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION redress_golditem_whole_versions();

DROP TRIGGER IF EXISTS golditem_no_truncate ON labeling_golditem;
CREATE TRIGGER golditem_no_truncate
    BEFORE TRUNCATE ON labeling_golditem
    FOR EACH STATEMENT EXECUTE FUNCTION redress_golditem_no_truncate();
"""

DROP = r"""
DROP TRIGGER IF EXISTS golditem_no_truncate ON labeling_golditem;
DROP TRIGGER IF EXISTS golditem_whole_versions ON labeling_golditem;
DROP FUNCTION IF EXISTS redress_golditem_no_truncate();
DROP FUNCTION IF EXISTS redress_golditem_whole_versions();
"""


def _run(schema_editor, sql: str) -> None:
    # No parameters: the '%' of RAISE's format strings must reach PostgreSQL as they are.
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)


def create_triggers(apps, schema_editor):
    _run(schema_editor, CREATE)


def restore_0003(apps, schema_editor):
    _run(schema_editor, DROP)
    # Back to 0003's functions (the row triggers themselves still point at them by name).
    _run(schema_editor, import_module("labeling.migrations.0003_gold_items_immutable").CREATE)
    _run(schema_editor, "DROP FUNCTION IF EXISTS redress_gold_purge_recorded(bigint);")


class Migration(migrations.Migration):

    dependencies = [
        ("labeling", "0004_gold_purge_record"),
    ]

    operations = [
        migrations.RunPython(create_triggers, restore_0003, elidable=False),
    ]
