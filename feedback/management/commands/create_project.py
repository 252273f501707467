from django.core.management.base import BaseCommand

from feedback.errors import ServiceError
from feedback.services.projects import project_create

from ._base import command_error


class Command(BaseCommand):
    help = "Create a project with the default feedback taxonomy."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")

    def handle(self, *args, slug: str, name: str, **options):
        try:
            project = project_create(slug=slug, name=name)
        except ServiceError as exc:
            raise command_error(exc) from exc
        self.stdout.write(
            f"Created project {project.slug} ({project.categories.count()} categories)"
        )
