"""URL routes."""

from api.urls import api
from django.contrib import admin
from django.urls import path
from ops.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", api.urls),
]
