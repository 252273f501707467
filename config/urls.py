from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from feedback.api.errors import database_unavailable_response
from feedback.api.errors import handler404 as api_handler404
from feedback.api.errors import handler500 as api_handler500

from .views import admin_index, healthz, landing

admin.site.site_header = "Redress"
admin.site.site_title = "Redress"
admin.site.index_title = "Administration"

urlpatterns = [
    path("", landing, name="landing"),
    # Before admin.site.urls: the same path as admin:index, answered first (reviewers go to
    # their queues); admin_view keeps the admin's login and staff check.
    path("admin/", admin.site.admin_view(admin_index), name="admin-start"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("feedback.api.urls")),
    path("api/v1/", include("labeling.api.urls")),
    path("api/v1/", include("monitoring.urls")),
    path("api/v1/", include("webhooks.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("healthz", healthz, name="healthz"),
]


def handler404(request, exception=None):
    if request.path.startswith("/api/"):
        return api_handler404(request, exception)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if request.path.startswith("/api/"):
        return api_handler500(request)
    unavailable = database_unavailable_response(request)  # 503 page: the database refused
    if unavailable is not None:
        return unavailable
    from django.views.defaults import server_error

    return server_error(request)
