from django.core.management.base import BaseCommand
from django.db import transaction

from feedback.errors import ServiceError
from feedback.management.commands._base import command_error, project_or_fail
from feedback.models import Membership
from feedback.services.projects import membership_grant
from labeling.services.queues import queue_reviewers_add


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
            # One transaction: an unknown queue leaves no half-made person behind.
            with transaction.atomic():
                membership = membership_grant(
                    project=project_obj, username=username, role=role, password=password
                )
                if queue:
                    queue_reviewers_add(project=project_obj, queue_ids=queue, user=membership.user)
        except ServiceError as exc:
            raise command_error(exc) from exc
        reviewing = f", reviewing in queue(s) {', '.join(map(str, queue))}" if queue else ""
        self.stdout.write(
            f"{username} is a {membership.get_role_display()} in {project}{reviewing}"
        )
