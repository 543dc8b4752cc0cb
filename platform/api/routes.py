"""The v1 endpoints. Each view resolves the federation with a scope, calls one service or selector, and presents.

Scopes: `ingest` registers clients and rounds, `generate` submits prompts,
`read` reads everything else. A token acts on its own federation; a console
user with several federations names one with ``?federation=<slug>``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from audits import selectors as audit_selectors
from audits.services import Submission, generation_submit, generation_submit_batch
from django.db import transaction
from ninja import File, Query, Router, Schema
from ninja.files import UploadedFile
from ninja.responses import Status
from pydantic import Field
from registry import selectors, services

from .present import accepted_out, generation_out, round_out
from .schemas import (
    BatchAccepted,
    BatchIn,
    ClientIn,
    ClientOut,
    ClientPatch,
    ErrorOut,
    GenerationAccepted,
    GenerationIn,
    GenerationListOut,
    GenerationOut,
    RoundOut,
    RoundPathIn,
    ShareSummaryOut,
)

ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut, 422: ErrorOut}
router = Router()


def _caller(request):
    return request.auth


# ---- clients ---------------------------------------------------------------------------------


@router.get("/clients", response={200: list[ClientOut], **ERRORS}, tags=["clients"])
def list_clients(request, federation: str | None = None):
    fed = _caller(request).federation("read", federation)
    return Status(200, list(selectors.client_list(federation=fed)))


@router.post("/clients", response={201: ClientOut, **ERRORS}, tags=["clients"])
def register_client(request, payload: ClientIn, federation: str | None = None):
    fed = _caller(request).federation("ingest", federation)
    return Status(201, services.client_register(federation=fed, **payload.dict()))


@router.get("/clients/{client_id}", response={200: ClientOut, **ERRORS}, tags=["clients"])
def get_client(request, client_id: str, federation: str | None = None):
    fed = _caller(request).federation("read", federation)
    return Status(200, selectors.client_get(federation=fed, client_id=client_id))


@router.patch("/clients/{client_id}", response={200: ClientOut, **ERRORS}, tags=["clients"])
def update_client(request, client_id: str, payload: ClientPatch, federation: str | None = None):
    fed = _caller(request).federation("ingest", federation)
    client = selectors.client_get(federation=fed, client_id=client_id)
    return Status(200, services.client_update(client=client, **payload.dict(exclude_unset=True)))


class PeriodQuery(Schema):
    since: datetime | None = None
    until: datetime | None = None
    federation: str | None = None


@router.get("/clients/{client_id}/summary", response={200: ShareSummaryOut, **ERRORS}, tags=["clients"])
def client_summary(request, client_id: str, period: Query[PeriodQuery]):
    fed = _caller(request).federation("read", period.federation)
    client = selectors.client_get(federation=fed, client_id=client_id)
    return Status(200, audit_selectors.client_share_summary(client=client, since=period.since, until=period.until))


@router.get("/summary", response={200: list[ShareSummaryOut], **ERRORS}, tags=["clients"])
def federation_summary(request, period: Query[PeriodQuery]):
    fed = _caller(request).federation("read", period.federation)
    return Status(200, audit_selectors.federation_share_summary(federation=fed, since=period.since, until=period.until))


# ---- rounds ----------------------------------------------------------------------------------


@router.post("/rounds/upload", response={200: RoundOut, 201: RoundOut, **ERRORS}, tags=["rounds"])
def upload_round(request, archive: File[UploadedFile], federation: str | None = None):
    fed = _caller(request).federation("ingest", federation)
    round_, created = services.round_register_from_archive(federation=fed, archive=_temporary_path(archive))
    return Status(201 if created else 200, round_out(round_))


@router.post("/rounds/register", response={200: RoundOut, 201: RoundOut, **ERRORS}, tags=["rounds"])
def register_round_path(request, payload: RoundPathIn, federation: str | None = None):
    fed = _caller(request).federation("ingest", federation)
    round_, created = services.round_register_from_storage(federation=fed, path=payload.path)
    return Status(201 if created else 200, round_out(round_))


@router.get("/rounds", response={200: list[RoundOut], **ERRORS}, tags=["rounds"])
def list_rounds(request, federation: str | None = None):
    fed = _caller(request).federation("read", federation)
    return Status(200, [round_out(r) for r in selectors.round_list(federation=fed).select_related("federation")])


@router.get("/rounds/{number}", response={200: RoundOut, **ERRORS}, tags=["rounds"])
def get_round(request, number: int, federation: str | None = None):
    fed = _caller(request).federation("read", federation)
    return Status(200, round_out(selectors.round_get(federation=fed, number=number)))


def _temporary_path(upload: UploadedFile) -> Path:
    """LimitedUploadHandler always streams to a temporary file."""
    return Path(upload.temporary_file_path())


# ---- generations -----------------------------------------------------------------------------


def _submission(item: GenerationIn) -> Submission:
    return Submission(
        prompt=item.prompt,
        response=item.response,
        round_number=item.round,
        max_new_tokens=item.max_new_tokens,
        chat_template=item.chat_template,
        external_ref=item.external_ref,
        lineage=item.lineage,
        lineage_credit=item.lineage_credit,
    )


@router.post("/generations", response={202: GenerationAccepted, **ERRORS}, tags=["generations"])
def submit_generation(request, payload: GenerationIn, federation: str | None = None):
    caller = _caller(request)
    fed = caller.federation("generate", federation)
    generation = generation_submit(federation=fed, submission=_submission(payload), submitted_by=caller.token)
    return Status(202, accepted_out(generation))


@router.post("/generations/batch", response={202: BatchAccepted, **ERRORS}, tags=["generations"])
def submit_batch(request, payload: BatchIn, federation: str | None = None):
    caller = _caller(request)
    fed = caller.federation("generate", federation)
    with transaction.atomic():
        generations = generation_submit_batch(
            federation=fed, submissions=[_submission(i) for i in payload.items], submitted_by=caller.token
        )
    return Status(202, {"batch_id": str(generations[0].batch_id), "generations": [accepted_out(g) for g in generations]})


class GenerationFilters(Schema):
    status: str | None = Field(None, pattern="^(queued|running|done|failed)$")
    source: str | None = Field(None, pattern="^(generated|submitted)$")
    round: int | None = Field(None, ge=0)
    predicted_client: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0)
    federation: str | None = None


@router.get("/generations", response={200: GenerationListOut, **ERRORS}, tags=["generations"])
def list_generations(request, filters: Query[GenerationFilters]):
    fed = _caller(request).federation("read", filters.federation)
    qs = audit_selectors.generation_list(
        federation_ids=[fed.pk],
        status=filters.status,
        source=filters.source,
        round_number=filters.round,
        predicted_client=filters.predicted_client,
        since=filters.since,
        until=filters.until,
    )
    page = list(qs[filters.offset : filters.offset + filters.limit + 1])
    more = len(page) > filters.limit
    items = [generation_out(g, with_attribution=False) for g in page[: filters.limit]]
    return Status(200, {"items": items, "next_offset": filters.offset + filters.limit if more else None})


@router.get("/generations/{generation_id}", response={200: GenerationOut, **ERRORS}, tags=["generations"])
def get_generation(request, generation_id: int):
    ids = _caller(request).federation_ids("read")
    generation = audit_selectors.generation_get(federation_ids=ids, generation_id=generation_id)
    return Status(200, generation_out(generation, with_attribution=True))
