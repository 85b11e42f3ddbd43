import logging

from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .health import health_report

logger = logging.getLogger(__name__)


@never_cache
@require_safe
def healthz(request):
    """GET or HEAD (load balancers use either); JSON, never a 500 page.
    `?strict=1` also answers 503 when the worker is unhealthy (apps.core.health)."""
    strict = request.GET.get("strict", "") not in ("", "0", "false")
    try:
        healthy, report = health_report(now=timezone.now(), strict=strict)
    except Exception as exc:
        logger.exception("healthz: the check itself failed")
        return JsonResponse(
            {"status": "unavailable", "error": f"{type(exc).__name__}: {exc}"}, status=503
        )
    return JsonResponse(report, status=200 if healthy else 503)
