"""A template rendered for one customer, to look at: the template editor's
preview (messaging.views) and the journey builder's (apps.builder) show the
same thing from here. Reads only: nothing is written or sent."""

import copy
from datetime import datetime
from typing import Any

from django.urls import reverse

from apps.customers.models import Customer

from .models import Category, Channel, Template
from .rendering import TemplateRenderError, render, template_check
from .sms_segments import sms_segments

SMS_SEGMENTS_WARNED_ABOVE = 3


def sms_summary(body: str) -> dict:
    """ "GSM-7, 2 segments", and a warning when a text is long enough to cost
    (and arrive) as more than three messages."""
    encoding, segments = sms_segments(body)
    summary = {
        "encoding": encoding,
        "segments": segments,
        "characters": len(body),
        "label": f"{encoding}, {segments} segment{'s' if segments != 1 else ''}",
        "warning": "",
    }
    if segments > SMS_SEGMENTS_WARNED_ABOVE:
        summary["warning"] = (
            f"{segments} segments: more than {SMS_SEGMENTS_WARNED_ABOVE} is sent (and billed) "
            "as that many messages and may arrive split. Shorten the text"
            + (" or remove the characters that need UCS-2." if encoding == "UCS-2" else ".")
        )
    return summary


def customer_summary(customer: Customer) -> dict:
    return {
        "id": customer.pk,
        "external_id": customer.external_id,
        "email": customer.email,
        "phone": customer.phone,
        "url": reverse("admin:customers_customer_change", args=[customer.pk]),
    }


def template_preview(template: Template, *, customer: Customer, now: datetime) -> dict[str, Any]:
    """`template` (saved or not) rendered for `customer`: `customer`, the
    `problems` that would refuse it at save, and `email` (subject,
    preheader, HTML, text) or `sms` (the body and its segments), with
    `error` when it does not render. A marketing email refused for its
    footer still shows the rest (the error says what is missing)."""
    result: dict[str, Any] = {
        "customer": customer_summary(customer),
        "problems": template_check(template),
    }
    try:
        rendered = render(template, customer=customer, now=now)
    except TemplateRenderError as exc:
        result["error"] = str(exc)
        if template.channel != Channel.EMAIL or template.category != Category.MARKETING:
            return result
        as_is = copy.copy(template)
        as_is.category = Category.TRANSACTIONAL
        try:
            rendered = render(as_is, customer=customer, now=now)
        except TemplateRenderError:
            return result
    if template.channel == Channel.SMS:
        result["sms"] = {"body": rendered.body, **sms_summary(rendered.body)}
    else:
        result["email"] = {
            "subject": rendered.subject,
            "preheader": rendered.preheader,
            "html": rendered.html,
            "text": rendered.text,
        }
    return result
