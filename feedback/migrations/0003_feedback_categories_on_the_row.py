"""Feedback categories move from link rows (``feedback_feedback_categories``) to a column on
the feedback row holding its sorted slugs: intake then writes one row per item instead of one
plus one per category (the bench's COPY ceiling roughly doubles).

1. add ``category_slugs`` (a JSON list, default ``[]``);
2. fill it from the link rows (sorted, distinct slugs); reverse: recreate the link rows from
   the slugs (a slug that names no category of the feedback's project is dropped: slugs are
   immutable and categories are never deleted, so there is none);
3. drop the many-to-many (its link table);
4. rename ``category_slugs`` to ``categories``;
5. on PostgreSQL, a GIN index (``jsonb_path_ops``) for ``?category=`` filters, which use JSON
   containment (``@>``). It is SQL here, not ``Meta.indexes``: a GIN index does not exist on
   SQLite, where the filter is ``EXISTS (… json_each …)`` over the project's rows.

Reversible. Steps 2 and its reverse run one SQL statement on PostgreSQL and go through the
ORM in chunks elsewhere.
"""

from collections import defaultdict

from django.db import migrations

import feedback.fields

GIN_INDEX = "feedback_categories_gin"
CHUNK = 2000


def links_to_column(apps, schema_editor):
    connection = schema_editor.connection
    Feedback = apps.get_model("feedback", "Feedback")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # COLLATE "C": the order intake writes (Python's sorted(), by code point).
            cursor.execute(
                """
                UPDATE feedback_feedback f SET category_slugs = s.slugs
                FROM (
                    SELECT fc.feedback_id,
                           jsonb_agg(DISTINCT c.slug COLLATE "C" ORDER BY c.slug COLLATE "C")
                               AS slugs
                    FROM feedback_feedback_categories fc
                    JOIN feedback_feedbackcategory c ON c.id = fc.feedbackcategory_id
                    GROUP BY fc.feedback_id
                ) s
                WHERE f.id = s.feedback_id
                """
            )
        return
    Through = Feedback.categories.through
    slugs: dict[int, set[str]] = defaultdict(set)
    for feedback_id, slug in Through.objects.values_list(
        "feedback_id", "feedbackcategory__slug"
    ).iterator(chunk_size=CHUNK):
        slugs[feedback_id].add(slug)
    ids = sorted(slugs)
    for start in range(0, len(ids), CHUNK):
        rows = list(Feedback.objects.filter(pk__in=ids[start : start + CHUNK]))
        for row in rows:
            row.category_slugs = sorted(slugs[row.pk])
        Feedback.objects.bulk_update(rows, ["category_slugs"])


def column_to_links(apps, schema_editor):
    connection = schema_editor.connection
    Feedback = apps.get_model("feedback", "Feedback")
    FeedbackCategory = apps.get_model("feedback", "FeedbackCategory")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO feedback_feedback_categories (feedback_id, feedbackcategory_id)
                SELECT DISTINCT f.id, c.id
                FROM feedback_feedback f
                CROSS JOIN LATERAL jsonb_array_elements_text(f.category_slugs) AS s(slug)
                JOIN feedback_feedbackcategory c
                  ON c.project_id = f.project_id AND c.slug = s.slug
                WHERE f.category_slugs <> '[]'::jsonb
                """
            )
        return
    Through = Feedback.categories.through
    ids = {
        (project_id, slug): pk
        for pk, project_id, slug in FeedbackCategory.objects.values_list("pk", "project_id", "slug")
    }
    links = []
    for feedback_id, project_id, slugs in (
        Feedback.objects.exclude(category_slugs=[])
        .values_list("pk", "project_id", "category_slugs")
        .iterator(chunk_size=CHUNK)
    ):
        for slug in dict.fromkeys(slugs or []):
            category_id = ids.get((project_id, slug))
            if category_id is not None:
                links.append(Through(feedback_id=feedback_id, feedbackcategory_id=category_id))
    Through.objects.bulk_create(links, batch_size=CHUNK)


def add_gin_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {GIN_INDEX} ON feedback_feedback "
            "USING gin (categories jsonb_path_ops)"
        )


def drop_gin_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {GIN_INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0002_leaner_feedback_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="feedback",
            name="category_slugs",
            field=feedback.fields.CategorySlugsField(blank=True, default=list),
        ),
        migrations.RunPython(links_to_column, column_to_links),
        migrations.RemoveField(model_name="feedback", name="categories"),
        migrations.RenameField(
            model_name="feedback", old_name="category_slugs", new_name="categories"
        ),
        migrations.RunPython(add_gin_index, drop_gin_index),
    ]
