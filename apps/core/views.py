from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .health import health_report


@never_cache
@require_GET
def healthz(request):
    healthy, report = health_report(now=timezone.now())
    return JsonResponse(report, status=200 if healthy else 503)
