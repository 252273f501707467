"""Prediction.project loses its own index: (project, external_id), (project, model_version)
and (project, occurred_at) all start with it. The lone index cost every prediction INSERT an
entry, and with no statistics yet PostgreSQL's generic plan for the prepared single-feedback
INSERT chose it to scan a project's predictions instead of probing (project, external_id)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0003_feedback_categories_on_the_row"),
    ]

    operations = [
        migrations.AlterField(
            model_name="prediction",
            name="project",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="predictions",
                to="feedback.project",
            ),
        ),
    ]
