"""The v1 API object, mounted at /api/v1/ (OpenAPI schema at /api/v1/openapi.json, docs at /api/v1/docs)."""

from __future__ import annotations

from ninja import NinjaAPI

from .auth import ConsoleSessionAuth, TokenAuth
from .errors import install_error_handlers
from .routes import router

api = NinjaAPI(
    title="ProToken platform API",
    version="1",
    urls_namespace="api-v1",
    auth=[TokenAuth(), ConsoleSessionAuth()],
    description="Federations, clients, rounds, generations and their ProToken attributions.",
)
install_error_handlers(api)
api.add_router("/", router)
