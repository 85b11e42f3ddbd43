"""The customer's pages, reached from links in messages (included at the root:
`/u/<token>`, `/preferences/<token>`)."""

from django.urls import path

from . import views

app_name = "messaging"

urlpatterns = [
    path("u/<str:token>", views.unsubscribe, name="unsubscribe"),
    path("preferences/<str:token>", views.preferences, name="preferences"),
]
