"""Console routes, mounted at / by config.urls."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "console"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("login/", auth_views.LoginView.as_view(template_name="console/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("f/<slug:slug>/", views.federation_detail, name="federation"),
    path("f/<slug:slug>/generations/", views.generation_list_page, name="generations"),
    path("f/<slug:slug>/generations/<int:generation_id>/", views.generation_detail, name="generation"),
    path("f/<slug:slug>/clients/<str:client_id>/", views.client_detail, name="client"),
    path("f/<slug:slug>/reports/", views.report_list, name="reports"),
    path("f/<slug:slug>/reports/<int:report_id>/", views.report_detail, name="report"),
    path("f/<slug:slug>/reports/<int:report_id>/report.html", views.report_html, name="report-html"),
    path("f/<slug:slug>/reports/<int:report_id>/report.pdf", views.report_pdf, name="report-pdf"),
]
