"""`/builder/`: the pages, and the JSON API under `/builder/api/`."""

from django.urls import path

from . import api, views

app_name = "builder"

urlpatterns = [
    path("", views.index, name="index"),
    path("journeys/<slug:slug>/", views.canvas, name="canvas"),
    path("api/", api.api_root, name="api-root"),
    path("api/catalog", api.catalog_view, name="api-catalog"),
    path("api/journeys", api.journeys_view, name="api-journeys"),
    path("api/journeys/<slug:slug>", api.journey_view, name="api-journey"),
    path("api/journeys/<slug:slug>/draft", api.draft_view, name="api-draft"),
    path("api/journeys/<slug:slug>/validate", api.validate_view, name="api-validate"),
    path("api/journeys/<slug:slug>/publish", api.publish_view, name="api-publish"),
    path("api/journeys/<slug:slug>/pause", api.pause_view, name="api-pause"),
    path("api/journeys/<slug:slug>/resume", api.resume_view, name="api-resume"),
    path("api/journeys/<slug:slug>/backtest", api.backtest_view, name="api-backtest"),
    path("api/journeys/<slug:slug>/counts", api.counts_view, name="api-counts"),
    path(
        "api/journeys/<slug:slug>/nodes/<str:node_id>/customers",
        api.node_customers_view,
        name="api-node-customers",
    ),
    path(
        "api/templates/<slug:slug>/preview",
        api.template_preview_view,
        name="api-template-preview",
    ),
    path("api/conditions/check", api.condition_check_view, name="api-condition-check"),
]
