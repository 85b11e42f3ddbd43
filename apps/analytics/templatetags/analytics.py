"""`{% analytics_home %}`: the marketer's summary at the top of the admin's
home page (templates/admin/index.html). A tag rather than a custom admin
site, so the admin's own index, app list and permissions stay as they are."""

from django import template
from django.utils import timezone

from .. import selectors

register = template.Library()


@register.inclusion_tag("analytics/_home.html", takes_context=True)
def analytics_home(context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return {"home": None}
    return {
        "home": selectors.home(now=timezone.now()),
        "can_journeys": user.has_perm("journeys.view_journey"),
        "can_dashboards": True,
    }
