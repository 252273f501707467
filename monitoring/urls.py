"""Monitoring routes, mounted under /api/v1/."""

from django.urls import path

from . import api

urlpatterns = [
    path("metrics", api.MetricsView.as_view(), name="metrics"),
    path("metrics/compare", api.MetricsCompareView.as_view(), name="metrics-compare"),
    path("alert-rules", api.AlertRuleListView.as_view(), name="alert-rules"),
    path("alert-rules/<int:pk>", api.AlertRuleDetailView.as_view(), name="alert-rule-detail"),
    path(
        "alert-rules/<int:pk>/evaluate",
        api.AlertRuleEvaluateView.as_view(),
        name="alert-rule-evaluate",
    ),
    path(
        "alert-rules/<int:pk>/events", api.AlertRuleEventsView.as_view(), name="alert-rule-events"
    ),
]
