"""Request and response bodies of the v1 API (pydantic via django-ninja)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import Field

CLIENT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class ErrorOut(Schema):
    code: str
    message: str
    field: str | None = None


class ClientIn(Schema):
    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    display_name: str = Field("", max_length=200)
    organisation: str = Field("", max_length=200)
    contact: str = Field("", max_length=254)
    payout_account_ref: str = Field("", max_length=200)
    status: Literal["active", "suspended"] = "active"


class ClientPatch(Schema):
    display_name: str | None = Field(None, max_length=200)
    organisation: str | None = Field(None, max_length=200)
    contact: str | None = Field(None, max_length=254)
    payout_account_ref: str | None = Field(None, max_length=200)
    status: Literal["active", "suspended"] | None = None


class ClientOut(Schema):
    client_id: str
    display_name: str
    organisation: str
    contact: str
    payout_account_ref: str
    status: str
    created_at: datetime
    updated_at: datetime


class RoundClientOut(Schema):
    client_id: str
    num_examples: int
    sha256: str


class RoundOut(Schema):
    federation: str
    number: int
    base_model: str
    kind: str
    aggregation: str
    global_sha256: str
    artifact_path: str
    size_bytes: int
    registered_at: datetime
    clients: list[RoundClientOut]


class RoundPathIn(Schema):
    path: str = Field(min_length=1, max_length=500, description="a round folder in the artifact store")


class GenerationIn(Schema):
    prompt: str = Field(min_length=1, max_length=20_000)
    response: str | None = Field(None, min_length=1, max_length=20_000, description="given: audit it (teacher-forced)")
    round: int | None = Field(None, ge=0, description="round number; the latest round when absent")
    max_new_tokens: int = Field(32, ge=1, le=512)
    chat_template: bool = True
    external_ref: str = Field("", max_length=200)
    lineage: bool = Field(False, description="also score each token with the clients of the round that made it, "
                          "walking back through the federation's earlier rounds")
    lineage_credit: Literal["making", "cumulative"] | None = Field(
        None, description="with lineage: a made token votes with its making round's shares (making), or with their "
        "mean over every round up to it (cumulative); the platform's default when absent")


class BatchIn(Schema):
    items: list[GenerationIn] = Field(min_length=1, max_length=256)


class GenerationAccepted(Schema):
    id: int
    status: str
    source: str
    round: int
    batch_id: str | None = None


class BatchAccepted(Schema):
    batch_id: str
    generations: list[GenerationAccepted]


class ClientScoreOut(Schema):
    client_id: str
    raw_score: float
    share: float
    rank: int
    in_responsible_set: bool


class TokenOut(Schema):
    position: int
    token_id: int
    text: str
    top_client: str
    top_share: float
    scores: list[float]


class LineageOut(Schema):
    """The round lineage of a response (`attribution.lineage`): each token scored at the round that made it."""

    format: str
    credit: str = Field(description="making: a made token votes with its making round's shares; cumulative: "
                        "with their mean over every round up to its making round")
    rounds: list[int] = Field(description="round numbers walked back through, oldest first")
    making_round: list[int | None] = Field(description="per token; null: no round made it (the base model "
                                           "picks it, or the attributed model would not): attributed round's scores")
    client_ids: list[str] = Field(description="column order of token_shares and sequence_shares")
    token_clients: list[str] = Field(description="per token, its top client at its making round")
    token_shares: list[list[float]]
    sequence_shares: list[float] = Field(description="mean share vote of the tokens some round made")
    predicted_client: str
    scored_at: dict[str, dict] = Field(description="round number -> provenance of the result its tokens came from")


class AttributionOut(Schema):
    method_version: str
    config: dict
    config_hash: str
    tracked_modules: list | dict
    snapshot_hashes: dict | list
    client_ids: list[str]
    predicted_client: str
    responsible_set: list[str]
    clients: list[ClientScoreOut]
    tokens: list[TokenOut]
    lineage: LineageOut | None = None


class GenerationOut(Schema):
    id: int
    federation: str
    round: int
    source: str
    status: str
    prompt: str
    response: str
    failure_code: str
    failure_reason: str
    attempts: int
    external_ref: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    engine_ms: int | None
    lineage: bool = False
    lineage_credit: str = ""
    attribution: AttributionOut | None = None


class GenerationListOut(Schema):
    items: list[GenerationOut]
    next_offset: int | None


class ShareSummaryOut(Schema):
    client_id: str
    generations: int
    mean_share: float
    top1: int
    responsible: int
