from django.core.management.base import BaseCommand

from feedback.errors import ServiceError
from feedback.services.feedback_tokens import token_secret_rotate

from ._base import command_error, project_or_fail


class Command(BaseCommand):
    help = (
        "Make a new token secret for a project's browser feedback tokens and print it once, as "
        "the last line. Tokens signed with the old secret are refused at once, or after "
        "--grace seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="The project's slug.")
        parser.add_argument(
            "--grace",
            type=int,
            default=0,
            help="Seconds (at most 86400) during which tokens signed with the old secret are "
            "still accepted. Default 0: refused at once.",
        )

    def handle(self, *args, project: str, grace: int, **options):
        try:
            secret = token_secret_rotate(project=project_or_fail(project), grace_seconds=grace)
        except ServiceError as exc:
            raise command_error(exc) from exc
        after = f"for {grace} s more" if grace else "no longer"
        self.stderr.write(
            f"New token secret for {project}; tokens signed with the previous one are accepted "
            f"{after}. It is shown once; store it with the app's server now."
        )
        self.stdout.write(secret)
