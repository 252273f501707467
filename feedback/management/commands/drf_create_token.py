"""``drf_create_token`` as DRF had it, for hashed tokens: prints the new token once.

The output keeps DRF's format, "Generated token <token> for user <username>", so scripts that
take the third word go on working. A person with a token already gets an error naming it (it
cannot be shown again); ``-r`` replaces it.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from feedback.errors import ServiceError
from feedback.services.tokens import personal_token_create

from ._base import command_error


class Command(BaseCommand):
    help = "Create a person's API token (printed once), or replace it with -r."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "-r",
            "--reset",
            action="store_true",
            dest="reset_token",
            default=False,
            help="Replace the person's token: the old one stops working.",
        )

    def handle(self, *args, username: str, reset_token: bool, **options):
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(f"Cannot create the Token: user {username} does not exist")
        try:
            token = personal_token_create(user=user, replace=reset_token)
        except ServiceError as exc:
            raise command_error(exc) from exc
        self.stdout.write(f"Generated token {token} for user {username}")
