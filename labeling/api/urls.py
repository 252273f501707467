"""Every route of the labeling API, mounted under /api/v1/. One module per feature."""

from django.urls import path

from . import audits, exports, goldsets, queues, reviewing, sampling

urlpatterns = [
    # Queues: labeling/api/queues.py
    path("queues", queues.QueueListView.as_view(), name="queues"),
    path("queues/<int:pk>", queues.QueueDetailView.as_view(), name="queue-detail"),
    path("queues/<int:pk>/stats", queues.QueueStatsView.as_view(), name="queue-stats"),
    # Sampling runs: labeling/api/sampling.py
    path("queues/<int:pk>/sample", sampling.QueueSampleView.as_view(), name="queue-sample"),
    path("sampling-runs/<int:pk>", sampling.SamplingRunView.as_view(), name="sampling-run"),
    # Reviewing (claim, label, release): labeling/api/reviewing.py
    path("queues/<int:pk>/claim", reviewing.ClaimView.as_view(), name="queue-claim"),
    path("items/<int:pk>/labels", reviewing.LabelCreateView.as_view(), name="item-labels"),
    path("items/<int:pk>/release", reviewing.ReleaseView.as_view(), name="item-release"),
    # Audits: labeling/api/audits.py
    path("audits", audits.AuditListView.as_view(), name="audits"),
    path("audits/<int:pk>", audits.AuditDetailView.as_view(), name="audit-detail"),
    path("audits/<int:pk>/report", audits.AuditReportView.as_view(), name="audit-report"),
    path("audits/<int:pk>/compare", audits.AuditCompareView.as_view(), name="audit-compare"),
    # Gold sets: labeling/api/goldsets.py
    path("goldsets", goldsets.GoldSetListView.as_view(), name="goldsets"),
    path(
        "goldsets/<slug:slug>/versions",
        goldsets.GoldSetVersionListView.as_view(),
        name="goldset-versions",
    ),
    path(
        "goldsets/<slug:slug>/versions/<int:number>/items",
        goldsets.GoldItemListView.as_view(),
        name="goldset-items",
    ),
    path(
        "goldsets/<slug:slug>/versions/<int:number>/publish",
        goldsets.GoldVersionPublishView.as_view(),
        name="goldset-publish",
    ),
    path(
        "goldsets/<slug:slug>/versions/<int:number>/diff",
        goldsets.GoldVersionDiffView.as_view(),
        name="goldset-diff",
    ),
    # Exports (and a published gold version as a file): labeling/api/exports.py
    path("exports", exports.ExportCreateView.as_view(), name="exports"),
    path("exports/<int:pk>", exports.ExportDetailView.as_view(), name="export-detail"),
    path("exports/<int:pk>/download", exports.ExportDownloadView.as_view(), name="export-download"),
    path("exports/<int:pk>/manifest", exports.ExportManifestView.as_view(), name="export-manifest"),
    path(
        "goldsets/<slug:slug>/versions/<int:number>/manifest",
        exports.GoldSnapshotManifestView.as_view(),
        name="goldset-manifest",
    ),
    path(
        "goldsets/<slug:slug>/versions/<int:number>/export",
        exports.GoldSnapshotExportView.as_view(),
        name="goldset-export",
    ),
]
