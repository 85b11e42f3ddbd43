from django.conf import settings
from django.http import JsonResponse

# Public, machine-facing endpoints: their bodies are capped before anything reads them.
LIMITED_PREFIXES = ("/api/", "/webhooks/", "/t/", "/u/", "/preferences/", "/nps/")


class BodySizeLimitMiddleware:
    """Answers 413 with a readable message when a public endpoint's body is over
    `API_MAX_BODY_BYTES`, without reading it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(LIMITED_PREFIXES):
            limit = settings.API_MAX_BODY_BYTES
            raw = request.META.get("CONTENT_LENGTH") or "0"
            try:
                length = int(raw)
            except ValueError:
                return JsonResponse({"error": f"invalid Content-Length {raw!r}"}, status=400)
            if length > limit:
                return JsonResponse(
                    {"error": f"request body is {length} bytes; the limit is {limit} bytes"},
                    status=413,
                )
        return self.get_response(request)
