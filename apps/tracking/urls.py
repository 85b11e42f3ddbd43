from django.urls import path

from . import views

app_name = "tracking"

urlpatterns = [
    path("t/o/<str:token>", views.open_pixel, name="open"),
    path("t/c/<str:token>", views.click_redirect, name="click"),
    path("webhooks/sendgrid", views.sendgrid_webhook, name="sendgrid"),
    path("webhooks/twilio/status", views.twilio_status, name="twilio-status"),
    path("webhooks/twilio/inbound", views.twilio_inbound, name="twilio-inbound"),
]
