from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from feedback.errors import ServiceError
from feedback.management.commands._base import command_error
from feedback.models import Feedback, Membership
from feedback.services.disputes import dispute_resolve


class Command(BaseCommand):
    help = (
        "Resolve a dispute as a project admin would in the admin's feedback triage: upheld (the "
        "user was right) or rejected (the output stands), with a note the app shows its user."
    )

    def add_arguments(self, parser):
        parser.add_argument("dispute", type=int, help="The dispute's id.")
        parser.add_argument("--status", required=True, choices=["upheld", "rejected"])
        parser.add_argument("--note", required=True, help="Why; the app reads it.")
        parser.add_argument(
            "--by", required=True, help="Username of a project admin (recorded in the history)."
        )

    def handle(self, *args, dispute, status, note, by, **options):
        actor = get_user_model().objects.filter(username=by).first()
        if actor is None:
            raise CommandError(f"No user {by!r}.")
        project_id = (
            Feedback.objects.filter(pk=dispute, kind=Feedback.Kind.DISPUTE)
            .values_list("project_id", flat=True)
            .first()
        )
        if project_id is None:
            raise CommandError(f"No dispute {dispute}.")
        is_admin = Membership.objects.filter(
            user=actor, project_id=project_id, role=Membership.Role.ADMIN
        ).exists()
        if not (actor.is_superuser or is_admin):
            raise CommandError(f"{by} is not an admin of the dispute's project.")
        try:
            resolved = dispute_resolve(
                dispute_id=dispute, upheld=status == "upheld", note=note, actor=actor
            )
        except ServiceError as exc:
            raise command_error(exc) from exc
        self.stdout.write(f"Dispute {resolved.pk} is {resolved.status}.")
