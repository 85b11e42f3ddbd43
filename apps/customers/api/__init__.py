"""The ingestion API (`routes.py`), how it reads bodies (`wire.py`) and
where it finds the API key (`auth.py`). The consent API shares its key,
errors and body handling through the names below."""

from .auth import ApiKeyAuth
from .routes import ERRORS, body_doc, read_json_object, router

__all__ = ["ERRORS", "ApiKeyAuth", "body_doc", "read_json_object", "router"]
