"""Every API error is JSON ``{"code", "message", "field"}`` with a 4xx/5xx status.

Services raise `PlatformError`s, whose code, message and field pass through
unchanged. Request validation errors name the first offending field as a
dotted path inside the body or query (e.g. ``items.0.prompt``).
"""

from __future__ import annotations

import logging

from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from registry.errors import PlatformError

log = logging.getLogger(__name__)
_LOCATIONS = {"body", "query", "path", "form", "file", "header", "cookie", "payload", "filters"}


def install_error_handlers(api: NinjaAPI) -> None:
    def respond(request, status: int, code: str, message: str, field: str | None = None):
        return api.create_response(request, {"code": code, "message": message, "field": field}, status=status)

    @api.exception_handler(PlatformError)
    def platform_error(request, exc: PlatformError):
        return respond(request, exc.status, exc.code, exc.message, exc.field)

    @api.exception_handler(ValidationError)
    def validation_error(request, exc: ValidationError):
        first = exc.errors[0] if exc.errors else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in _LOCATIONS) or None
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return respond(request, 422, "invalid", message, field)

    @api.exception_handler(AuthenticationError)
    def unauthenticated(request, exc):
        return respond(
            request, 401, "unauthenticated", "missing, invalid or revoked credentials: send Authorization: Bearer <token>"
        )

    @api.exception_handler(HttpError)
    def http_error(request, exc: HttpError):
        return respond(request, exc.status_code, "http_error", str(exc))

    @api.exception_handler(Http404)
    def not_found(request, exc):
        return respond(request, 404, "not_found", str(exc) or "not found")

    @api.exception_handler(Exception)
    def internal_error(request, exc):
        log.exception("unhandled API error")
        return respond(request, 500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")
