"""Published gold is immutable in the database itself (PostgreSQL only).

Two BEFORE triggers raise (SQLSTATE 23001, restrict_violation: Django's IntegrityError):

- on ``labeling_golditem``: any INSERT, UPDATE or DELETE of an item in a published version
  (and moving an item into one), so not even a raw query changes published gold;
- on ``labeling_goldsetversion``: an UPDATE of a published version's content or status
  (``gold_set``, ``number``, ``status``, ``parent``, ``item_count``, ``checksum``,
  ``published_at``), and its DELETE. ``notes`` and the user links (SET NULL when a user is
  deleted) may still change.

Deleting a published version, hence a gold set or a project holding one, is refused unless the
transaction says ``SET LOCAL redress.gold_purge = 'on'`` first: the deliberate escape that
``labeling.services.goldsets.goldset_purge`` uses. TRUNCATE (test teardown) fires no row trigger.

The item trigger reads its version ``FOR SHARE``: that waits for a publish in progress (which
holds the version ``FOR UPDATE``) and then sees it published, so an item cannot slip into a
version between its checksum and its commit.

SQLite has no equivalent here; the model layer (``labeling.models.gold``) guards it.
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION redress_gold_purging() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('redress.gold_purge', true), '') = 'on'
$$;

CREATE OR REPLACE FUNCTION redress_golditem_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    version_status text;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF TG_OP = 'DELETE' AND redress_gold_purging() THEN
            RETURN OLD;
        END IF;
        SELECT status INTO version_status FROM labeling_goldsetversion
            WHERE id = OLD.version_id FOR SHARE;
        IF version_status = 'published' THEN
            RAISE EXCEPTION 'gold item % (key %) belongs to published gold-set version %: '
                'published gold is immutable', OLD.id, OLD.key, OLD.version_id
                USING ERRCODE = 'restrict_violation',
                      HINT = 'Start a new draft version to change gold content.';
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
        IF redress_gold_purging() THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'gold-set version % is published and cannot be deleted', OLD.id
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Only a purge (SET LOCAL redress.gold_purge = ''on'') removes it.';
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

DROP TRIGGER IF EXISTS golditem_frozen ON labeling_golditem;
CREATE TRIGGER golditem_frozen
    BEFORE INSERT OR UPDATE OR DELETE ON labeling_golditem
    FOR EACH ROW EXECUTE FUNCTION redress_golditem_frozen();

DROP TRIGGER IF EXISTS goldversion_frozen ON labeling_goldsetversion;
CREATE TRIGGER goldversion_frozen
    BEFORE UPDATE OR DELETE ON labeling_goldsetversion
    FOR EACH ROW EXECUTE FUNCTION redress_goldversion_frozen();
"""

DROP = r"""
DROP TRIGGER IF EXISTS goldversion_frozen ON labeling_goldsetversion;
DROP TRIGGER IF EXISTS golditem_frozen ON labeling_golditem;
DROP FUNCTION IF EXISTS redress_goldversion_frozen();
DROP FUNCTION IF EXISTS redress_golditem_frozen();
DROP FUNCTION IF EXISTS redress_gold_purging();
"""


def _run(schema_editor, sql: str) -> None:
    # No parameters: the '%' of RAISE's format strings must reach PostgreSQL as they are.
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)


def create_triggers(apps, schema_editor):
    _run(schema_editor, CREATE)


def drop_triggers(apps, schema_editor):
    _run(schema_editor, DROP)


class Migration(migrations.Migration):

    dependencies = [
        ("labeling", "0002_gold_sets_exports_audits"),
    ]

    operations = [
        migrations.RunPython(create_triggers, drop_triggers, elidable=False),
    ]
