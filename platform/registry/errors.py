"""Named errors of the platform's services.

Every user-facing failure is a `PlatformError` with a stable machine `code`, a
message a person can act on, the offending `field` when there is one, and the
HTTP status the API answers with. Services raise them; the API turns them into
``{"code", "message", "field"}`` JSON and the management commands into a
`CommandError`, so the same message reaches every caller.
"""

from __future__ import annotations


class PlatformError(Exception):
    status = 400

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field}


class InvalidInput(PlatformError):
    """The request is well-formed but its content is wrong (bad round, bad prompt)."""

    status = 422


class MalformedArchive(PlatformError):
    """An uploaded archive cannot be read or holds entries we refuse to unpack."""

    status = 400


class UploadTooLarge(PlatformError):
    status = 413


class NotFound(PlatformError):
    """Absent, or not visible to the caller (the two are indistinguishable on purpose)."""

    status = 404


class Conflict(PlatformError):
    status = 409


class Forbidden(PlatformError):
    status = 403
