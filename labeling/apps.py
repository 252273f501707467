from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        from . import randomness  # noqa: F401  registers u(seed, id) on SQLite connections
