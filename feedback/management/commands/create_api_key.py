from django.core.management.base import BaseCommand

from feedback.errors import ServiceError
from feedback.services.keys import apikey_create

from ._base import command_error, project_or_fail


class Command(BaseCommand):
    help = "Create a project API key. The key is printed once, as the last line of output."

    def add_arguments(self, parser):
        parser.add_argument("project", help="The project's slug.")
        parser.add_argument("--scopes", default="ingest", help="Comma-separated: ingest,data.")
        parser.add_argument("--name", default="")

    def handle(self, *args, project: str, scopes: str, name: str, **options):
        scope_list = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        try:
            key, raw = apikey_create(project=project_or_fail(project), scopes=scope_list, name=name)
        except ServiceError as exc:
            raise command_error(exc) from exc
        self.stderr.write(
            f"Created key {key.prefix}… for {project} with scopes {','.join(key.scopes)}. "
            "It is shown once; store it now."
        )
        self.stdout.write(raw)
