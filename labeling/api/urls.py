from django.urls import include, path

from . import audits, exports, views

urlpatterns = [
    path("queues", views.QueueListView.as_view(), name="queues"),
    path("queues/<int:pk>", views.QueueDetailView.as_view(), name="queue-detail"),
    path("queues/<int:pk>/sample", views.QueueSampleView.as_view(), name="queue-sample"),
    path("queues/<int:pk>/stats", views.QueueStatsView.as_view(), name="queue-stats"),
    path("queues/<int:pk>/claim", views.ClaimView.as_view(), name="queue-claim"),
    path("sampling-runs/<int:pk>", views.SamplingRunView.as_view(), name="sampling-run"),
    path("items/<int:pk>/labels", views.LabelCreateView.as_view(), name="item-labels"),
    path("items/<int:pk>/release", views.ReleaseView.as_view(), name="item-release"),
    path("audits", audits.AuditListView.as_view(), name="audits"),
    path("audits/<int:pk>", audits.AuditDetailView.as_view(), name="audit-detail"),
    path("audits/<int:pk>/report", audits.AuditReportView.as_view(), name="audit-report"),
    path("audits/<int:pk>/compare", audits.AuditCompareView.as_view(), name="audit-compare"),
    path("", include("labeling.api.goldsets")),  # /goldsets…: labeling/api/goldsets.py
    path("exports", exports.ExportCreateView.as_view(), name="exports"),
    path("exports/<int:pk>", exports.ExportDetailView.as_view(), name="export-detail"),
    path("exports/<int:pk>/download", exports.ExportDownloadView.as_view(), name="export-download"),
    path(
        "goldsets/<slug:slug>/versions/<int:number>/export",
        exports.GoldSnapshotExportView.as_view(),
        name="goldset-export",
    ),
]
