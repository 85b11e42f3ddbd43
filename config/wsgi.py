import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_wsgi_application()

# The open pixel and the click redirect skip most of Django's request cycle
# (apps/tracking/wsgi.py); everything else is Django's application.
from apps.tracking.wsgi import TrackingFastPath  # noqa: E402  (needs Django set up)

application = TrackingFastPath(django_application)
