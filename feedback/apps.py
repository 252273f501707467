from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    name = "feedback"
    verbose_name = "Feedback intake"

    def ready(self) -> None:
        # the lane's system check (redress.E001); the OpenAPI auth extension
        from .api import middleware, schema  # noqa: F401
