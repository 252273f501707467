"""The labeling admin: queue configuration and dashboard, sampling runs, items, adjudication.

Scoping is the admin's one access model (``feedback.access.ProjectScopedMixin``): a superuser
project; any other staff user sees the queues, runs and items of their projects, and writes
only where their role carries the permission. Two pages go further and ask for the project
admin role itself (``labeling.selectors.can_manage``), as the labeling API does: the queue
dashboard and adjudication.

Writes go through ``labeling.services``: queues are created and edited with ``queue_create`` /
``queue_update`` (the form checks the policy with ``validate_policy`` first, so an impossible
policy is a form error), "Sample now" calls ``sampling_run_request`` and adjudication calls
``item_adjudicate``. Runs and items are read-only here.

The reviewer workspace (``labeling.admin.workspace``) is mounted under the queue admin's URLs, at
``admin/labeling/queue/workspace/``, inside the ``admin`` namespace.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import (
    BooleanField,
    Case,
    Count,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, include, path, reverse
from django.utils.html import format_html, format_html_join

from feedback.access import ProjectScopedMixin, permission_name, projects_where
from feedback.admin import adopt, counted, join_reasons, pretty_json
from feedback.errors import ServiceError
from feedback.models import Feedback
from feedback.selectors import projects_for_user
from feedback.services.projects import ROLE_GROUPS

from ..models import GoldSet, Label, LabelRevision, Queue, QueueItem, SamplingRun
from ..payloads.queues import GOLD_RATE_MAX, queue_input
from ..selectors import MANAGE_ROLES, can_manage, queue_stats
from ..services.labels import item_adjudicate
from ..services.queues import (
    CONFIG_FIELDS,
    GOLD_FIELDS,
    queue_create,
    queue_update,
)
from ..services.sampling import FILTER_KEYS, POLICY_FIELDS, sampling_run_request, validate_policy
from .fields import CommaListField
from .gold import promote_to_gold_action
from .workspace import workspace_urls

# The dashboard lists this many recent runs and items waiting for adjudication.
DASHBOARD_RUNS = 10
DASHBOARD_WAITING = 50
SAMPLING_FIELDS = (*POLICY_FIELDS, "seed", "schedule_minutes")  # what queue_* take as "sampling"
REVIEW_FIELDS = (
    "instructions",
    "label_choices",
    "overlap",
    "lease_seconds",
    "show_segments",
    "consensus",
    "notify_every",
)


# --- shared pieces ---------------------------------------------------------------------------


def _managed(request: HttpRequest, project_lookup: str) -> Case:
    """An annotation: may the person manage the row's project (``can_manage``, per row, in the
    same query)? Lets lists show dashboard and adjudication links without a query per row."""
    managed = projects_for_user(user=request.user, roles=MANAGE_ROLES)
    return Case(
        When(**{f"{project_lookup}__in": managed}, then=Value(True)),
        default=Value(False),
        output_field=BooleanField(),
    )


def _count_of(queryset: QuerySet, outer: str) -> Coalesce:
    """COUNT(*) of ``queryset`` rows whose ``outer`` column is the outer row's pk."""
    counted = (
        queryset.filter(**{outer: OuterRef("pk")})
        .order_by()
        .values(outer)
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(counted), Value(0))


class QueueFilter(admin.SimpleListFilter):
    """By queue, offered from the person's projects only (the stock related-only filter would
    scan every item for the distinct queues)."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        queues = (
            Queue.objects.filter(project__in=projects_where(request))
            .select_related("project")
            .order_by("project__slug", "name")
        )
        return [(str(queue.pk), str(queue)) for queue in queues]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(queue_id=self.value())
        return queryset


class QueueChildMixin(ProjectScopedMixin):
    """Scoping for models that reach their project through their queue."""

    project_lookup = "queue__project"

    def project_id_of(self, obj: Any) -> int:
        return obj.queue.project_id


# --- queues ----------------------------------------------------------------------------------


class QueueForm(forms.ModelForm):
    label_choices = CommaListField(
        required=False,
        help_text="The classes a reviewer picks the true label from, comma-separated "
        "(e.g. refund, cancel, other). Empty: no true label is asked for.",
    )
    strata = CommaListField(
        required=False,
        help_text="Segment keys to stratify by, comma-separated (e.g. locale, device).",
    )
    filter = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Which predictions may be drawn, as JSON; keys: "
        f"{', '.join(sorted(FILTER_KEYS))}. Example: "
        '{"model_version": "2026-11-01", "segment": {"locale": "de-DE"}}.',
    )

    class Meta:
        model = Queue
        fields = (
            "project",
            "name",
            "active",
            *REVIEW_FIELDS,
            "reviewers",
            "reviewer_group",
            *GOLD_FIELDS,
            *SAMPLING_FIELDS,
        )
        widgets = {"instructions": forms.Textarea(attrs={"rows": 4, "cols": 80})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "reviewers" in self.fields and self.instance.project_id is not None:
            # queue_update accepts only members of the queue's project.
            self.fields["reviewers"].queryset = (
                get_user_model()
                .objects.filter(memberships__project_id=self.instance.project_id)
                .order_by("username")
            )
        if "gold_set" in self.fields:
            # queue_update accepts only gold sets of the queue's project, and rates up to 0.5:
            # say so here, beside the fields, rather than as a refusal after the form.
            self.fields["gold_set"].queryset = GoldSet.objects.filter(
                project_id=self.instance.project_id
            ).order_by("slug")
            rate = self.fields["gold_rate"]
            rate.widget.attrs.update(min=0, max=GOLD_RATE_MAX, step="any")
        if "reviewer_group" in self.fields:
            # A role group spans every project: choosing it would open the queue to every
            # reviewer of every project.
            self.fields["reviewer_group"].queryset = Group.objects.exclude(
                name__in=ROLE_GROUPS.values()
            ).order_by("name")

    def clean_filter(self) -> dict[str, Any]:
        return self.cleaned_data["filter"] or {}

    def clean(self) -> dict[str, Any]:
        """The form's values as the API's payload, checked by the same declaration
        (``queue_input``), then the policy as a whole (``validate_policy``)."""
        data = super().clean()
        if self.instance.pk is not None and "name" in data:
            # The project is read-only on the change page, so the model's (project, name)
            # constraint check skips it; queue_update would refuse the clash after the form.
            clash = Queue.objects.filter(project_id=self.instance.project_id, name=data["name"])
            if clash.exclude(pk=self.instance.pk).exists():
                self.add_error("name", "Another queue of this project has this name.")
        if self.errors:
            return data
        sent: dict[str, Any] = {name: data[name] for name in CONFIG_FIELDS if name in data}
        if "gold_set" in sent:
            sent["gold_set"] = sent["gold_set"].slug if sent["gold_set"] else None
        sent["sampling"] = {name: data[name] for name in SAMPLING_FIELDS if name in data}
        if "reviewers" in data:
            sent["reviewers"] = [user.get_username() for user in data["reviewers"]]
        try:
            self.sent = queue_input(sent, partial=True)
            validate_policy({name: data[name] for name in POLICY_FIELDS})
        except ServiceError as exc:
            for error in exc.errors:
                # "sampling.filter.kinds" belongs to the filter field, and so on.
                name = (error.field or "").removeprefix("sampling.").split(".")[0].split("[")[0]
                if name in self.fields and name not in self.errors:
                    self.add_error(name, error.detail)
                elif name not in self.errors:
                    self.add_error(None, f"{error.field}: {error.detail}")
        return data


@admin.register(Queue)
class QueueAdmin(ProjectScopedMixin, admin.ModelAdmin):
    form = QueueForm
    # The dashboard link comes right after the name: at the end it fell off a 1440 px screen.
    list_display = (
        "name",
        "dashboard_link",
        "project",
        "source_strategy",
        "overlap",
        "open_items",
        "adjudication_items",
        "complete_items",
        "reviewer_count",
        "active",
    )
    list_filter = (
        ("project", admin.RelatedOnlyFieldListFilter),
        "source",
        "strategy",
        "consensus",
        "active",
    )
    search_fields = ("name", "project__slug")
    list_select_related = ("project",)
    filter_horizontal = ("reviewers",)
    actions = ["sample_now"]
    change_form_template = "admin/labeling/queue/change_form.html"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        # Ten columns and the filters need the width: the app list is one click away (Home).
        extra = {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        return super().changelist_view(request, extra)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Queue]:
        items = QueueItem.objects.filter(gold_item__isnull=True)  # hidden gold checks aside
        return (
            super()
            .get_queryset(request)
            .annotate(
                open_count=_count_of(items.filter(status=QueueItem.Status.OPEN), "queue"),
                adjudication_count=_count_of(
                    items.filter(status=QueueItem.Status.ADJUDICATION), "queue"
                ),
                complete_count=_count_of(items.filter(status=QueueItem.Status.COMPLETE), "queue"),
                reviewers_count=_count_of(Queue.reviewers.through.objects.all(), "queue"),
                managed=_managed(request, "project"),
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: Queue | None = None) -> list:
        general: tuple[str, ...] = ("project", "name", "active")
        policy: tuple[str, ...] = SAMPLING_FIELDS
        if obj is not None:
            general, policy = (*general, "created_at"), (*policy, "last_scheduled_at")
        fieldsets: list = [
            (None, {"fields": general}),
            ("Review", {"fields": REVIEW_FIELDS}),
        ]
        if obj is not None:
            # Reviewers must be members of the queue's project: picked once it is known, as the
            # project page adds taxonomy and members after creation.
            fieldsets.append(("Reviewers", {"fields": ("reviewers", "reviewer_group")}))
            # Like reviewers: the gold set must be of the queue's project, known once created.
            fieldsets.append(
                (
                    "Hidden gold checks",
                    {
                        "fields": GOLD_FIELDS,
                        "description": "This share of served items are checks from the gold "
                        "set's latest published version, looking like any other item; answers "
                        "count toward each reviewer's gold accuracy (dashboard), never as labels.",
                    },
                )
            )
        fieldsets.append(
            (
                "Sampling policy",
                {
                    "fields": policy,
                    "description": "What each sampling run draws into the queue. all: every "
                    "matching prediction; uniform, stratified and uncertainty need exactly one "
                    "of size and rate. A disputes queue always takes every open dispute.",
                },
            )
        )
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Queue | None = None) -> list[str]:
        # A queue never moves between projects: its items and labels belong to the project.
        return ["project", "created_at", "last_scheduled_at"] if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting a queue deletes its items and every label on them; pause it (active) instead.
        return False

    # -- saving through the services --

    def save_model(self, request: HttpRequest, obj: Queue, form: Any, change: bool) -> None:
        cleaned, data = form.cleaned_data, form.sent
        if change:
            # ``obj`` carries the form's values, reviewer_group included (the service takes no
            # group and saves the whole row).
            queue_update(queue=obj, data=data)
        else:
            adopt(obj, queue_create(project=cleaned["project"], data=data))

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # The service set the reviewers already; the form's save_m2m would only repeat it.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The form checks what the services check; a refusal can still come from a race (a
        # name taken, a member removed meanwhile). The admin's transaction rolls back; say why.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceError as exc:
            self.message_user(
                request, f"Not saved: {' '.join(e.detail for e in exc.errors)}", messages.ERROR
            )
            return HttpResponseRedirect(request.get_full_path())

    # -- columns --

    @admin.display(description="source / strategy", ordering="source")
    def source_strategy(self, obj: Queue) -> str:
        if obj.source == Queue.Source.DISPUTES:
            return "disputes / all"
        return f"{obj.source} / {obj.strategy}"

    @admin.display(description="open", ordering="open_count")
    def open_items(self, obj: Queue) -> int:
        return obj.open_count

    @admin.display(description="adjudication", ordering="adjudication_count")
    def adjudication_items(self, obj: Queue) -> int:
        return obj.adjudication_count

    @admin.display(description="complete", ordering="complete_count")
    def complete_items(self, obj: Queue) -> int:
        return obj.complete_count

    @admin.display(description="reviewers", ordering="reviewers_count")
    def reviewer_count(self, obj: Queue) -> str:
        group = f" + {obj.reviewer_group}" if obj.reviewer_group_id else ""
        return f"{obj.reviewers_count}{group}"

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: Queue) -> str:
        if not obj.managed:
            return "-"
        url = reverse("admin:labeling_queue_dashboard", args=[obj.pk])
        return format_html('<a href="{}">Dashboard</a>', url)

    # -- actions --

    @admin.action(description="Sample now", permissions=["change"])
    def sample_now(self, request: HttpRequest, queryset: QuerySet[Queue]) -> None:
        writable = set(
            projects_where(request, permission_name(self.opts, "change")).values_list(
                "pk", flat=True
            )
        )
        runs, refused = [], []
        for queue in queryset.select_related("project").order_by("pk"):
            if queue.project_id not in writable:
                refused.append(f"{queue}: you may not sample queues of {queue.project.slug}")
                continue
            run = sampling_run_request(queue=queue, actor=request.user)
            runs.append(f"#{run.pk} ({queue})")
        if runs:
            self.message_user(
                request,
                f"Requested {counted(len(runs), 'sampling run')}: {', '.join(runs)}. They are "
                "drawn in the background; see Sampling runs or the queue's dashboard.",
                messages.SUCCESS,
            )
        if refused:
            self.message_user(
                request, f"Refused {len(refused)}: {join_reasons(refused)}.", messages.WARNING
            )

    # -- custom pages --

    def get_urls(self) -> list[URLPattern]:
        custom = [
            # Patterns relative to the workspace root, each wrapped in admin_view already.
            # include() of a plain list adds no namespace: they stay in "admin".
            path("workspace/", include(workspace_urls())),
            path(
                "<path:object_id>/dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="labeling_queue_dashboard",
            ),
        ]
        # Before the stock patterns: their "<path:object_id>/" would swallow these.
        return custom + super().get_urls()

    def dashboard_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Items, labels, agreement and reviewers of a queue, its recent runs, and what waits
        for adjudication. Project admins only."""
        queue = self.get_object(request, object_id)
        if queue is None:
            raise Http404("No such queue of yours.")
        if not can_manage(queue=queue, user=request.user):
            raise PermissionDenied("Only the project's admins see a queue's dashboard.")
        stats = queue_stats(queue=queue)
        runs = list(queue.runs.select_related("requested_by").order_by("-id")[:DASHBOARD_RUNS])
        for run in runs:
            run.strata = [
                {
                    "name": stratum or "(all)",
                    "population": population,
                    "sampled": (run.sampled or {}).get(stratum, 0),
                }
                for stratum, population in sorted((run.population or {}).items())
            ]
            run.population_total = sum((run.population or {}).values())
            run.sampled_total = sum((run.sampled or {}).values())
        waiting = list(
            queue.items.filter(status=QueueItem.Status.ADJUDICATION)
            .select_related("prediction")
            .defer("prediction__input", "prediction__output")
            .prefetch_related(Prefetch("labels", queryset=Label.objects.select_related("reviewer")))
            .order_by("-priority", "created_at", "id")[:DASHBOARD_WAITING]
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Dashboard: {queue}",
            "opts": self.opts,
            "original": queue,
            "queue": queue,
            "stats": stats,
            "runs": runs,
            "waiting": waiting,
            "waiting_more": max(0, stats["items"]["adjudication"] - len(waiting)),
            "can_sample": self.has_change_permission(request, queue),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/labeling/queue/dashboard.html", context)


# --- sampling runs ---------------------------------------------------------------------------


@admin.register(SamplingRun)
class SamplingRunAdmin(QueueChildMixin, admin.ModelAdmin):
    """Read-only: a run is the record of one draw."""

    list_display = (
        "id",
        "queue",
        "status",
        "trigger",
        "seed",
        "population_total",
        "sampled_total",
        "requested_by",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", QueueFilter, "trigger", "created_at")
    list_select_related = ("queue", "queue__project", "requested_by")
    search_fields = ("queue__name", "queue__project__slug")
    ordering = ("-id",)
    fields = (
        "queue",
        "status",
        "trigger",
        "seed",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "per_stratum",
        "population_json",
        "sampled_json",
        "policy_json",
    )
    readonly_fields = fields

    @admin.display(description="population")
    def population_total(self, obj: SamplingRun) -> int:
        return sum((obj.population or {}).values())

    @admin.display(description="sampled")
    def sampled_total(self, obj: SamplingRun) -> int:
        return sum((obj.sampled or {}).values())

    @admin.display(description="per stratum (population → sampled)")
    def per_stratum(self, obj: SamplingRun) -> str:
        population, sampled = obj.population or {}, obj.sampled or {}
        if not population:
            return "-"
        return format_html_join(
            "\n",
            "<div>{}: {} → {}</div>",
            (
                (stratum or "(all)", population[stratum], sampled.get(stratum, 0))
                for stratum in sorted(population)
            ),
        )

    @admin.display(description="population (JSON)")
    def population_json(self, obj: SamplingRun) -> str:
        return pretty_json(obj.population)

    @admin.display(description="sampled (JSON)")
    def sampled_json(self, obj: SamplingRun) -> str:
        return pretty_json(obj.sampled)

    @admin.display(description="policy")
    def policy_json(self, obj: SamplingRun) -> str:
        return pretty_json(obj.policy)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are requested with "Sample now" on the queues, or a schedule

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- items and adjudication ------------------------------------------------------------------


class LabelInline(admin.TabularInline):
    """The item's labels with their edit history, read-only."""

    model = Label
    fields = (
        "reviewer",
        "verdict",
        "true_label",
        "category_slugs",
        "notes",
        "seconds_spent",
        "created_at",
        "history",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Label]:
        revisions = LabelRevision.objects.select_related("changed_by")
        return (
            super()
            .get_queryset(request)
            .select_related("reviewer")
            .prefetch_related(Prefetch("revisions", queryset=revisions))
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The labels belong to the item: whoever may see the item sees them (the role groups
        # carry no Label permissions).
        return request.user.has_perm("labeling.view_queueitem")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="categories")
    def category_slugs(self, obj: Label) -> str:
        return ", ".join(obj.categories) or "-"

    @admin.display(description="earlier versions")
    def history(self, obj: Label) -> str:
        revisions = list(obj.revisions.all())
        if not revisions:
            return "-"
        return format_html_join(
            "\n",
            "<div>{} by {}: was {}{}</div>",
            (
                (
                    f"{revision.changed_at:%Y-%m-%d %H:%M}",
                    revision.changed_by or "?",
                    revision.content.get("verdict"),
                    f" ({revision.content['true_label']})"
                    if revision.content.get("true_label")
                    else "",
                )
                for revision in revisions
            ),
        )


class AdjudicationForm(forms.Form):
    required_css_class = "required"  # the admin's label style
    verdict = forms.ChoiceField(
        choices=[
            (Label.Verdict.CORRECT, "Correct: the model's output stands"),
            (Label.Verdict.INCORRECT, "Incorrect: the output was wrong"),
        ],
        widget=forms.RadioSelect,
    )
    true_label = forms.ChoiceField(label="True label", required=True)
    note = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="Why; stored with the consensus. Disputes on this prediction are resolved "
        "with the verdict (upheld when incorrect, rejected when correct).",
    )

    def __init__(self, *args: Any, label_choices: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if label_choices:
            self.fields["true_label"].choices = [("", "---------")] + [
                (choice, choice) for choice in label_choices
            ]
        else:
            del self.fields["true_label"]


@admin.register(QueueItem)
class QueueItemAdmin(QueueChildMixin, admin.ModelAdmin):
    """Read-only, but for adjudication (its own page, for the project's admins)."""

    list_display = (
        "id",
        "queue",
        "prediction_link",
        "stratum",
        "pi",
        "priority",
        "status",
        "labels_count",
        "verdict",
        "adjudicate_link",
    )
    list_filter = (QueueFilter, "status")
    search_fields = ("prediction__external_id",)
    list_select_related = ("queue", "queue__project", "prediction")
    show_full_result_count = False
    inlines = [LabelInline]
    actions = ["promote_to_gold"]
    fields = (
        "queue",
        "status",
        "prediction_link",
        "model_version",
        "prediction_input",
        "prediction_output",
        "feedback_link",
        "run_link",
        "stratum",
        "pi",
        "weight",
        "priority",
        "labels_count",
        "consensus_json",
        "created_at",
        "completed_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[QueueItem]:
        return (
            super()
            .get_queryset(request)
            .select_related("queue", "queue__project", "prediction")
            # The list never shows the payloads; the item page reads them with one query.
            .defer("prediction__input", "prediction__output")
            .annotate(managed=_managed(request, "queue__project"))
            # Production items only: a hidden gold check has no prediction, is never labeled
            # toward completion, and its answers show as gold accuracy on the dashboard.
            .filter(gold_item__isnull=True)
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # items come from sampling runs

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an item holds labels

    @admin.action(description="Promote to gold draft")
    def promote_to_gold(self, request: HttpRequest, queryset: QuerySet[QueueItem]) -> Any:
        # The form page and the promotion live with the gold-set admin (queues imports gold).
        return promote_to_gold_action(self, request, queryset)

    # -- columns --

    @admin.display(description="prediction", ordering="prediction__external_id")
    def prediction_link(self, obj: QueueItem) -> str:
        url = reverse("admin:feedback_prediction_change", args=[obj.prediction_id])
        return format_html('<a href="{}">{}</a>', url, obj.prediction.external_id)

    @admin.display(description="model version")
    def model_version(self, obj: QueueItem) -> str:
        return obj.prediction.model_version or "-"

    @admin.display(description="model input")
    def prediction_input(self, obj: QueueItem) -> str:
        return pretty_json(obj.prediction.input)

    @admin.display(description="model output")
    def prediction_output(self, obj: QueueItem) -> str:
        return pretty_json(obj.prediction.output)

    @admin.display(description="brought by")
    def feedback_link(self, obj: QueueItem) -> str:
        if obj.feedback_id is None:
            return "-"
        url = reverse("admin:feedback_feedback_change", args=[obj.feedback_id])
        return format_html('<a href="{}">feedback #{}</a>', url, obj.feedback_id)

    @admin.display(description="sampling run")
    def run_link(self, obj: QueueItem) -> str:
        if obj.run_id is None:
            return "-"
        url = reverse("admin:labeling_samplingrun_change", args=[obj.run_id])
        return format_html('<a href="{}">run #{}</a>', url, obj.run_id)

    @admin.display(description="π", ordering="inclusion_probability")
    def pi(self, obj: QueueItem) -> str:
        return f"{obj.inclusion_probability:.4g}"

    @admin.display(description="weight (1/π)")
    def weight(self, obj: QueueItem) -> str:
        return f"{1 / obj.inclusion_probability:.4g}"

    @admin.display(description="verdict")
    def verdict(self, obj: QueueItem) -> str:
        consensus = obj.consensus or {}
        verdict = consensus.get("verdict") or "-"
        if consensus.get("true_label"):
            verdict += f" ({consensus['true_label']})"
        return verdict

    @admin.display(description="consensus")
    def consensus_json(self, obj: QueueItem) -> str:
        return pretty_json(obj.consensus)

    @admin.display(description="")
    def adjudicate_link(self, obj: QueueItem) -> str:
        if obj.status != QueueItem.Status.ADJUDICATION or not obj.managed:
            return ""
        url = reverse("admin:labeling_queueitem_adjudicate", args=[obj.pk])
        return format_html('<a href="{}">Adjudicate</a>', url)

    # -- adjudication --

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<path:object_id>/adjudicate/",
                self.admin_site.admin_view(self.adjudicate_view),
                name="labeling_queueitem_adjudicate",
            ),
        ]
        return custom + super().get_urls()

    def adjudicate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Settle an item waiting for adjudication: the verdict (and true label), a note."""
        item = self.get_object(request, object_id)
        if item is None:
            raise Http404("No such item of yours.")
        if not can_manage(queue=item.queue, user=request.user):
            raise PermissionDenied("Only the project's admins adjudicate its items.")
        if item.status != QueueItem.Status.ADJUDICATION:
            self.message_user(
                request,
                f"Item {item.pk} is not waiting for adjudication ({item.get_status_display()}).",
                messages.INFO,
            )
            return HttpResponseRedirect(reverse("admin:labeling_queueitem_change", args=[item.pk]))

        form = AdjudicationForm(
            request.POST if request.method == "POST" else None,
            label_choices=item.queue.label_choices,
        )
        if request.method == "POST" and form.is_valid():
            try:
                item = item_adjudicate(
                    item=item,
                    actor=request.user,
                    verdict=form.cleaned_data["verdict"],
                    true_label=form.cleaned_data.get("true_label", ""),
                    note=form.cleaned_data["note"],
                )
            except ServiceError as exc:
                for error in exc.errors:
                    field = error.field if error.field in form.fields else None
                    form.add_error(field, error.detail)
            else:
                verdict = item.consensus["verdict"]
                label = item.consensus.get("true_label")
                self.message_user(
                    request,
                    f"Item {item.pk} is complete: {verdict}{f' ({label})' if label else ''}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:labeling_queue_dashboard", args=[item.queue_id])
                )

        labels = item.labels.select_related("reviewer").order_by("id")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjudicate item {item.pk}",
            "opts": self.opts,
            "original": item,
            "item": item,
            "queue": item.queue,
            "prediction": item.prediction,
            "input_json": pretty_json(item.prediction.input),
            "output_json": pretty_json(item.prediction.output),
            "labels": labels,
            "feedback": Feedback.objects.filter(prediction_id=item.prediction_id).order_by("id"),
            "form": form,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/labeling/queueitem/adjudicate.html", context)
