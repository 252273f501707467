from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        from feedback.api.caller import FEEDBACK_READ, grant

        from . import randomness  # noqa: F401  registers u(seed, id) on SQLite connections
        from .selectors.queues import segment_reviewer_projects

        grant(FEEDBACK_READ, segment_reviewer_projects)
