from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from feedback.services.events import on_event_committed

        from .services.dispatch import event_committed

        on_event_committed(event_committed)
