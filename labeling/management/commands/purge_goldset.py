import getpass

from django.core.management.base import BaseCommand, CommandError

from feedback.errors import ServiceError
from feedback.management.commands._base import command_error, project_or_fail
from labeling.models import GoldSet
from labeling.services.goldsets import goldset_purge


class Command(BaseCommand):
    help = (
        "Delete a gold set with all its versions, published ones included, and record who did "
        "it, when and why (the admin: Labeling, Gold purges)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The gold set's slug.")
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument("--reason", required=True, help="Why: kept in the purge record.")

    def handle(self, *args, slug: str, project: str, reason: str, **options):
        project_obj = project_or_fail(project)
        gold_set = GoldSet.objects.filter(project=project_obj, slug=slug).first()
        if gold_set is None:
            raise CommandError(f"No gold set {slug!r} in {project_obj.slug}.")
        if not reason.strip():
            raise CommandError("--reason must say why: it is kept in the purge record.")
        try:
            counts = goldset_purge(
                gold_set=gold_set,
                actor_name=f"manage.py purge_goldset ({getpass.getuser()})",
                reason=reason,
            )
        except ServiceError as exc:
            raise command_error(exc) from exc
        self.stdout.write(
            f"Purged {project_obj.slug}/{slug}: {counts['versions']} versions, "
            f"{counts['items']} items (purge record {counts['record']})"
        )
