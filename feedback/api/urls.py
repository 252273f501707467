from django.urls import path

from . import views
from .intake import fast_intake, feedback_batch_post, feedback_post

urlpatterns = [
    path("predictions", views.PredictionsView.as_view(), name="predictions"),
    # The hot POSTs: plain Django views, the DRF views for the rest (feedback/api/intake.py)
    path("feedback", fast_intake(views.FeedbackView.as_view(), feedback_post), name="feedback"),
    path(
        "feedback/batch",
        fast_intake(views.FeedbackBatchView.as_view(), feedback_batch_post),
        name="feedback-batch",
    ),
    path("categories", views.CategoryListView.as_view(), name="categories"),
    path("disputes/<int:pk>", views.DisputeDetailView.as_view(), name="dispute-detail"),
    path("disputes/<int:pk>/resolve", views.DisputeResolveView.as_view(), name="dispute-resolve"),
]
