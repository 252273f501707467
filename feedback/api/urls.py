from django.urls import path

from . import views

urlpatterns = [
    path("predictions", views.PredictionsView.as_view(), name="predictions"),
    path("feedback", views.FeedbackView.as_view(), name="feedback"),
    path("feedback/batch", views.FeedbackBatchView.as_view(), name="feedback-batch"),
    path("categories", views.CategoryListView.as_view(), name="categories"),
    path("disputes/<int:pk>", views.DisputeDetailView.as_view(), name="dispute-detail"),
]
