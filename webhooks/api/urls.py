from django.urls import path

from . import views

urlpatterns = [
    path("webhooks", views.WebhookListView.as_view(), name="webhooks"),
    path("webhooks/<int:pk>", views.WebhookDetailView.as_view(), name="webhook-detail"),
    path("webhooks/<int:pk>/rotate-secret", views.WebhookRotateSecretView.as_view(),
         name="webhook-rotate-secret"),
    path("webhooks/<int:pk>/test", views.WebhookTestView.as_view(), name="webhook-test"),
    path("webhooks/<int:pk>/deliveries", views.WebhookDeliveriesView.as_view(),
         name="webhook-deliveries"),
    path("webhook-deliveries/<int:pk>/redeliver", views.DeliveryRedeliverView.as_view(),
         name="webhook-delivery-redeliver"),
]
