from django.urls import path

from . import views
from .intake import KeyIntake, feedback_batch_post, feedback_post, predictions_post
from .token_intake import feedback_token_post

# The intake POSTs with an API key are served by feedback/api/intake.py, the rest by DRF.
urlpatterns = [
    path(
        "predictions", KeyIntake(views.PredictionsView.as_view(), predictions_post),
        name="predictions",
    ),
    path(
        "feedback",
        KeyIntake(views.FeedbackView.as_view(), feedback_post, feedback_token_post),
        name="feedback",
    ),
    path("feedback-tokens", views.FeedbackTokenView.as_view(), name="feedback-tokens"),
    path(
        "projects/<slug:slug>/allowed-origins",
        views.ProjectOriginsView.as_view(),
        name="project-allowed-origins",
    ),
    path(
        "feedback/batch",
        KeyIntake(views.FeedbackBatchView.as_view(), feedback_batch_post),
        name="feedback-batch",
    ),
    path("categories", views.CategoryListView.as_view(), name="categories"),
    path("disputes/<int:pk>", views.DisputeDetailView.as_view(), name="dispute-detail"),
    path("disputes/<int:pk>/resolve", views.DisputeResolveView.as_view(), name="dispute-resolve"),
]
