"""URL routes."""

from api.urls import api
from django.contrib import admin
from django.urls import include, path
from ops.views import healthz
from rewards.api import router as rewards_router

api.add_router("/rewards", rewards_router)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", api.urls),
    path("", include("console.urls")),
]
