from django.core.management.base import BaseCommand, CommandError

from feedback.errors import ServiceError
from feedback.management.commands._base import command_error, project_or_fail
from feedback.models import Membership
from feedback.services.projects import membership_grant


class Command(BaseCommand):
    help = "Create (or update) a person who may label in a project, optionally in given queues."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument(
            "--queue", type=int, action="append", default=[], help="A queue id; repeatable."
        )
        parser.add_argument("--password", default=None)
        parser.add_argument(
            "--role",
            default=Membership.Role.REVIEWER,
            choices=Membership.Role.values,
            help="reviewer (default), data_scientist or admin.",
        )

    def handle(self, *args, username, project, queue, password, role, **options):
        project_obj = project_or_fail(project)
        try:
            membership = membership_grant(
                project=project_obj, username=username, role=role, password=password
            )
        except ServiceError as exc:
            raise command_error(exc) from exc
        if queue:
            # Queues (labeling, issue 3) are not built yet: refuse rather than ignore the option.
            raise CommandError(
                f"{username} is a {membership.get_role_display()} in {project}, but --queue "
                "needs labeling queues, which this version does not have yet."
            )
        self.stdout.write(f"{username} is a {membership.get_role_display()} in {project}")
