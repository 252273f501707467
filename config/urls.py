from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from feedback.api.errors import database_unavailable_response
from feedback.api.errors import handler404 as api_handler404
from feedback.api.errors import handler500 as api_handler500


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("feedback.api.urls")),
    path("api/v1/", include("labeling.api.urls")),
    path("api/v1/", include("webhooks.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
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
