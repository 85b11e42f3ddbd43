from django.contrib import admin
from django.urls import include, path

from apps.core.views import healthz

from .api import api

admin.site.site_header = "Tenure"
admin.site.site_title = "Tenure"
admin.site.index_title = "Lifecycle marketing"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("healthz", healthz, name="healthz"),
    path("builder/", include("apps.builder.urls")),
    path("analytics/", include("apps.analytics.urls")),
    path("", include("apps.messaging.urls")),
    path("", include("apps.tracking.urls")),
    path("", include("apps.surveys.urls")),
]
