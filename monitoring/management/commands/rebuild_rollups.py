from django.core.management.base import BaseCommand, CommandError

from feedback.models import Project
from monitoring.rollups import rollups_rebuild


class Command(BaseCommand):
    help = "Recount every hourly rollup from the raw rows (all projects, or --project)."

    def add_arguments(self, parser):
        parser.add_argument("--project", action="append", help="A project's slug (repeatable).")

    def handle(self, *args, project=None, **options):
        ids = None
        if project:
            found = dict(Project.objects.filter(slug__in=project).values_list("slug", "pk"))
            missing = sorted(set(project) - set(found))
            if missing:
                raise CommandError(f"No project {', '.join(missing)}.")
            ids = list(found.values())
        result = rollups_rebuild(project_ids=ids)
        self.stdout.write(f"rebuilt {result['rows']} rollup rows for {result['projects']} projects")
