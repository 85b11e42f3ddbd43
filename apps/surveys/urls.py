"""The survey page, reached from the score links of a survey message
(included at the root: `/nps/<token>`)."""

from django.urls import path

from . import views

app_name = "surveys"

urlpatterns = [
    path("nps/<str:token>", views.survey_page, name="answer"),
    path("nps/<str:token>/thanks", views.thanks_page, name="thanks"),
]
