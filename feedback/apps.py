from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    name = "feedback"
    verbose_name = "Feedback intake"

    def ready(self) -> None:
        # the lane's system check (redress.E001); the OpenAPI auth extension
        # and CORS per project for the feedback-token endpoints (django-cors-headers' signal)
        from .api import cors, middleware, schema  # noqa: F401
