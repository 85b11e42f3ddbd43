from django.urls import path

from . import views

app_name = "analytics"

urlpatterns = [
    path("", views.index, name="index"),
    path("journeys/", views.journeys, name="journeys"),
    path("journeys/<slug:slug>/", views.journey, name="journey"),
    path("deliverability/", views.deliverability, name="deliverability"),
    path("retention/", views.retention, name="retention"),
    path("nps/", views.nps, name="nps"),
]
