"""The rewards endpoints under /api/v1/rewards: settlements, flags and their review, harm marks, payout files.

Mounted by ``config/urls.py`` (``api.add_router("/rewards", rewards.api.router)``).
Reads need the ``read`` scope; writes (settling, reviewing, marking,
exporting) need ``ingest`` until the registry grows a dedicated finance or
review scope (WRITE_SCOPE is the one place to change). Errors are the API's
usual ``{"code", "message", "field"}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api.schemas import ErrorOut
from django.http import HttpResponse
from ninja import Router, Schema
from ninja.responses import Status
from pydantic import Field

from . import harm, selectors, services
from .rules import SettlementRules

READ_SCOPE, WRITE_SCOPE = "read", "ingest"
ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}
router = Router(tags=["rewards"])


def _actor(request) -> str:
    caller = request.auth
    if caller.token is not None:
        return f"token:{caller.token.name}:{caller.token.prefix}"[:128]
    return f"user:{caller.user_id}"


class SettleIn(Schema):
    period_start: datetime
    period_end: datetime
    pool_amount: int
    currency: str
    basis: str = "sequence_share"
    rules: dict[str, Any] = Field(default_factory=dict)


class SettlementOut(Schema):
    id: int
    period: str
    period_start: datetime
    period_end: datetime
    currency: str
    basis: str
    status: str
    pool_amount: int
    allocated_amount: int
    held_amount: int
    retained_amount: int
    clients_paid: int
    clients_held: int
    generations_count: int
    harmful_count: int
    rounds_count: int
    flags_count: int
    flag_ids: list[int]
    ledger_seq: int | None
    ledger_hash: str
    replayed: bool = False


class FlagOut(Schema):
    id: int
    client_id: str
    period: str
    method: str
    score: float
    p_value: float | None
    q_value: float | None
    state: str
    evidence: dict[str, Any]
    history: list[dict[str, Any]]


class ReviewIn(Schema):
    state: str
    note: str = ""


class ReviewOut(Schema):
    flag: FlagOut
    previous_state: str
    changed: bool
    released: list[int]  # ledger seq of the transactions that moved held amounts back to payable


class HarmMarkIn(Schema):
    note: str = ""


class HarmMarkOut(Schema):
    id: int
    generation_id: int
    source: str
    actor: str
    note: str
    reasons: list[str]
    created_at: datetime
    revoked_at: datetime | None


class HarmPolicyIn(Schema):
    name: str
    patterns: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)


class HarmPolicyOut(Schema):
    id: int
    name: str
    patterns: list[str]
    keywords: list[str]
    active: bool
    created_by: str


class PayoutExportOut(Schema):
    id: int
    settlement_id: int
    period: str
    currency: str
    ledger_seq: int
    csv_sha256: str
    json_sha256: str
    total_amount: int
    lines_count: int
    replayed: bool = False


def _settlement_out(settlement, replayed: bool = False) -> dict:
    return {**SettlementOut.from_orm(settlement).dict(), "replayed": replayed}


def _flag_out(flag) -> dict:
    return {name: getattr(flag, name) for name in FlagOut.model_fields}


# ---- settlements ---------------------------------------------------------------------------------


@router.post("/settlements", response={200: SettlementOut, 201: SettlementOut, **ERRORS})
def settle(request, payload: SettleIn, federation: str | None = None):
    fed = request.auth.federation(WRITE_SCOPE, federation)
    result = services.period_settle(
        federation=fed, period_start=payload.period_start, period_end=payload.period_end,
        pool_amount=payload.pool_amount, currency=payload.currency, basis=payload.basis,
        rules=SettlementRules.from_dict(payload.rules), actor=_actor(request))
    return Status(200 if result.replayed else 201, _settlement_out(result.settlement, result.replayed))


@router.get("/settlements", response={200: list[SettlementOut], **ERRORS})
def list_settlements(request, federation: str | None = None):
    fed = request.auth.federation(READ_SCOPE, federation)
    return Status(200, [_settlement_out(s) for s in selectors.settlement_list(federation=fed)])


@router.get("/settlements/{settlement_id}", response={200: SettlementOut, **ERRORS})
def get_settlement(request, settlement_id: int, federation: str | None = None):
    fed = request.auth.federation(READ_SCOPE, federation)
    return Status(200, _settlement_out(selectors.settlement_get(federation=fed, settlement_id=settlement_id)))


# ---- flags ---------------------------------------------------------------------------------------


@router.get("/flags", response={200: list[FlagOut], **ERRORS})
def list_flags(request, federation: str | None = None, state: str | None = None, client_id: str | None = None):
    fed = request.auth.federation(READ_SCOPE, federation)
    flags = selectors.flag_list(federation=fed, state=state, client_id=client_id)
    return Status(200, [_flag_out(f) for f in flags])


@router.post("/flags/{flag_id}/review", response={200: ReviewOut, **ERRORS})
def review(request, flag_id: int, payload: ReviewIn, federation: str | None = None):
    fed = request.auth.federation(WRITE_SCOPE, federation)
    result = services.flag_review(federation=fed, flag_id=flag_id, state=payload.state, actor=_actor(request),
                                  note=payload.note)
    return Status(200, {"flag": _flag_out(result.flag), "previous_state": result.previous_state,
                        "changed": result.changed,
                        "released": [r.seq for r in result.released]})


# ---- harm marks and policies ---------------------------------------------------------------------


@router.post("/generations/{generation_id}/harm", response={201: HarmMarkOut, **ERRORS})
def mark_harmful(request, generation_id: int, payload: HarmMarkIn, federation: str | None = None):
    fed = request.auth.federation(WRITE_SCOPE, federation)
    generation = harm.generation_for_mark(federation=fed, generation_id=generation_id)
    return Status(201, harm.harm_mark(generation=generation, actor=_actor(request), note=payload.note))


@router.delete("/generations/{generation_id}/harm", response={200: HarmMarkOut, **ERRORS})
def unmark_harmful(request, generation_id: int, federation: str | None = None):
    fed = request.auth.federation(WRITE_SCOPE, federation)
    generation = harm.generation_for_mark(federation=fed, generation_id=generation_id)
    return Status(200, harm.harm_unmark(generation=generation, actor=_actor(request)))


@router.get("/harm-policies", response={200: list[HarmPolicyOut], **ERRORS})
def list_policies(request, federation: str | None = None):
    fed = request.auth.federation(READ_SCOPE, federation)
    return Status(200, list(fed.harm_policies.order_by("name")))


@router.post("/harm-policies", response={201: HarmPolicyOut, **ERRORS})
def create_policy(request, payload: HarmPolicyIn, federation: str | None = None):
    fed = request.auth.federation(WRITE_SCOPE, federation)
    return Status(201, harm.harm_policy_create(federation=fed, name=payload.name, patterns=payload.patterns,
                                               keywords=payload.keywords, actor=_actor(request)))


# ---- payout exports ------------------------------------------------------------------------------


@router.post("/settlements/{settlement_id}/export", response={200: PayoutExportOut, 201: PayoutExportOut, **ERRORS})
def export(request, settlement_id: int, federation: str | None = None):
    fed = request.auth.federation(WRITE_SCOPE, federation)
    settlement = selectors.settlement_get(federation=fed, settlement_id=settlement_id)
    result = services.payout_export(settlement=settlement, actor=_actor(request))
    out = {**PayoutExportOut.from_orm(result.export).dict(), "replayed": result.replayed}
    return Status(200 if result.replayed else 201, out)


@router.get("/exports/{export_id}/download", response={200: None, **ERRORS})
def download(request, export_id: int, format: str = "csv", federation: str | None = None):  # noqa: A002
    fed = request.auth.federation(READ_SCOPE, federation)
    stored = services.payout_file(export=selectors.payout_export_get(federation=fed, export_id=export_id), fmt=format)
    response = HttpResponse(stored.content, content_type=stored.content_type)
    response["Content-Disposition"] = f'attachment; filename="{stored.name}"'
    response["X-Content-SHA256"] = stored.sha256
    return response
