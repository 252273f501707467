from django.urls import path

from . import views

urlpatterns = [
    path("queues", views.QueueListView.as_view(), name="queues"),
    path("queues/<int:pk>", views.QueueDetailView.as_view(), name="queue-detail"),
    path("queues/<int:pk>/sample", views.QueueSampleView.as_view(), name="queue-sample"),
    path("queues/<int:pk>/stats", views.QueueStatsView.as_view(), name="queue-stats"),
    path("queues/<int:pk>/claim", views.ClaimView.as_view(), name="queue-claim"),
    path("sampling-runs/<int:pk>", views.SamplingRunView.as_view(), name="sampling-run"),
    path("items/<int:pk>/labels", views.LabelCreateView.as_view(), name="item-labels"),
    path("items/<int:pk>/release", views.ReleaseView.as_view(), name="item-release"),
]
