from django.core.management.base import BaseCommand

from feedback.errors import ServiceError
from feedback.services.projects import membership_revoke

from ._base import command_error, project_or_fail


class Command(BaseCommand):
    help = (
        "Take a person's role in a project away (and the role's permission group, when they "
        "hold that role nowhere else)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--project", required=True, help="The project's slug.")

    def handle(self, *args, username: str, project: str, **options):
        project_obj = project_or_fail(project)
        try:
            role = membership_revoke(project=project_obj, username=username)
        except ServiceError as exc:
            raise command_error(exc) from exc
        self.stdout.write(f"{username} is no longer a {role} in {project_obj.slug}")
