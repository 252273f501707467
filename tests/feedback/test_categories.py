"""Feedback categories: sorted slugs on the row, slugs immutable, the migration from links."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from feedback.errors import Conflict
from feedback.models import Feedback, FeedbackCategory
from feedback.selectors import project_context, with_any_category
from feedback.services.categories import category_save
from feedback.services.intake import feedback_submit, predictions_log

BEFORE = ("feedback", "0002_leaner_feedback_indexes")
AFTER = ("feedback", "0003_feedback_categories_on_the_row")

pytestmark = pytest.mark.django_db


def test_slugs_are_stored_sorted_and_distinct(project):
    context = project_context(project=project)
    predictions_log(context=context, items=[{"external_id": "p"}])

    (result,) = feedback_submit(
        context=context,
        items=[{"prediction": "p", "kind": "report", "categories": ["unsafe", "biased", "unsafe"]}],
    )

    assert result.outcome == "created"
    assert Feedback.objects.get(pk=result.obj.pk).categories == ["biased", "unsafe"]


@pytest.mark.parametrize("batch", [1, 20])  # 20: the COPY path on PostgreSQL
def test_the_any_category_filter(project, other_project, batch):
    context = project_context(project=project)
    predictions_log(context=context, items=[{"external_id": "p"}])
    sets = [["unsafe"], ["biased", "incorrect"], [], ["incorrect"]]
    items = [
        {"prediction": "p", "kind": "report", "categories": sets[i % 4]} for i in range(batch * 4)
    ]
    for start in range(0, len(items), batch):
        feedback_submit(context=context, items=items[start : start + batch])
    # another project's feedback with the same slug is not this project's
    other = project_context(project=other_project)
    predictions_log(context=other, items=[{"external_id": "p"}])
    feedback_submit(context=other, items=[{"prediction": "p", "kind": "report",
                                           "categories": ["incorrect"]}])

    mine = Feedback.objects.filter(project=project)

    def count(*slugs):
        return mine.filter(with_any_category(list(slugs))).count()

    assert count("unsafe") == batch
    assert count("incorrect") == 2 * batch
    assert count("incorrect", "unsafe") == 3 * batch
    assert count("biased", "incorrect") == 2 * batch
    assert count("off_topic") == 0
    assert count() == 0
    assert mine.exclude(with_any_category(["incorrect", "unsafe"])).count() == batch


def test_a_slug_cannot_change_once_created(project):
    category = FeedbackCategory.objects.get(project=project, slug="other")
    category.slug = "misc"

    with pytest.raises(Conflict) as refused:
        category_save(category=category)

    assert refused.value.errors[0].field == "slug"
    assert refused.value.errors[0].code == "immutable"
    assert FeedbackCategory.objects.get(pk=category.pk).slug == "other"


def test_name_description_and_active_stay_editable(project):
    category = FeedbackCategory.objects.get(project=project, slug="other")
    category.name, category.description, category.active = "Something else", "Anything", False

    category_save(category=category)

    stored = FeedbackCategory.objects.get(pk=category.pk)
    assert (stored.slug, stored.name, stored.description, stored.active) == (
        "other", "Something else", "Anything", False,
    )


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_links_into_the_column_and_back():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    try:
        apps = executor.loader.project_state([BEFORE]).apps
        Project = apps.get_model("feedback", "Project")
        Category = apps.get_model("feedback", "FeedbackCategory")
        Prediction = apps.get_model("feedback", "Prediction")
        Old = apps.get_model("feedback", "Feedback")
        project = Project.objects.create(slug="m", name="M", secret="s" * 64)
        cats = {
            slug: Category.objects.create(project=project, slug=slug, name=slug, position=i)
            for i, slug in enumerate(["unsafe", "biased", "off_topic"])
        }
        prediction = Prediction.objects.create(
            project=project, external_id="p", occurred_at=timezone.now(), content_hash="h" * 64
        )
        both = Old.objects.create(project=project, prediction=prediction, kind="report")
        both.categories.add(cats["unsafe"], cats["biased"])
        none = Old.objects.create(project=project, prediction=prediction, kind="report")
        one = Old.objects.create(project=project, prediction=prediction, kind="report")
        one.categories.add(cats["off_topic"])

        # when: forward
        executor = MigrationExecutor(connection)
        executor.migrate([AFTER])

        # then: the slugs, sorted, on each row
        New = executor.loader.project_state([AFTER]).apps.get_model("feedback", "Feedback")
        stored = dict(New.objects.values_list("pk", "categories"))
        assert stored == {both.pk: ["biased", "unsafe"], none.pk: [], one.pk: ["off_topic"]}

        # when: backward, the same links again
        executor = MigrationExecutor(connection)
        executor.migrate([BEFORE])
        Back = executor.loader.project_state([BEFORE]).apps.get_model("feedback", "Feedback")
        through = Back.categories.through
        links = set(through.objects.values_list("feedback_id", "feedbackcategory_id"))
        assert links == {
            (both.pk, cats["unsafe"].pk),
            (both.pk, cats["biased"].pk),
            (one.pk, cats["off_topic"].pk),
        }
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
