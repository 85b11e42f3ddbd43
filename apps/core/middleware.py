from django.conf import settings
from django.http import JsonResponse

# Public, machine-facing endpoints: their bodies are capped before anything reads them.
LIMITED_PREFIXES = ("/api/", "/webhooks/", "/t/", "/u/", "/preferences/", "/nps/")


class BodySizeLimitMiddleware:
    """Answers 413 with a readable message when a public endpoint's body is over
    `API_MAX_BODY_BYTES`, without reading it. A compressed body is held to it
    as sent (its Content-Length); the ingestion API holds what it inflates to
    Segment's limits itself (apps/customers/api/wire.py)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(LIMITED_PREFIXES):
            limit = settings.API_MAX_BODY_BYTES
            raw = request.META.get("CONTENT_LENGTH") or "0"
            try:
                length = int(raw)
            except ValueError:
                length = -1
            if length < 0:
                return JsonResponse({"error": f"invalid Content-Length {raw[:40]!r}"}, status=400)
            if length > limit:
                sent = " as sent (compressed)" if request.META.get("HTTP_CONTENT_ENCODING") else ""
                return JsonResponse(
                    {
                        "error": f"request body is {length} bytes{sent}; the limit is "
                        f"{limit} bytes (API_MAX_BODY_BYTES)"
                    },
                    status=413,
                )
        return self.get_response(request)
