"""Canonical JSON and the per-federation hash chain.

Every ledger transaction and every flag-review event takes the next sequence
number of its federation's chain and stores ``hash = sha256(prev_hash ||
canonical(record))``. `verify.verify` recomputes the chain from the stored
rows, so an edit to any hashed field of any row breaks it from that row on.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def timestamp(dt: datetime) -> str:
    """A timestamp as the chain records it: UTC, microseconds (what Postgres keeps)."""
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def link(prev_hash: str, record: dict) -> str:
    return sha256_hex(prev_hash + canonical_json(record))


def request_hash(
    *, kind: str, legs: list[list], period: str | None, memo: str, metadata_json: str, reverses_id: int | None
) -> str:
    """What an idempotency key is bound to: the body of the request, not when it was sent."""
    body = {
        "kind": kind,
        "legs": sorted(legs),
        "period": period,
        "memo": memo,
        "metadata": metadata_json,
        "reverses_id": reverses_id,
    }
    return sha256_hex(canonical_json(body))


def transaction_record(txn, legs: list[list]) -> dict:
    """The hashed content of a ledger transaction; `legs` are [kind, client, currency, amount]."""
    return {
        "type": "transaction",
        "federation": txn.federation,
        "seq": txn.seq,
        "kind": txn.kind,
        "idempotency_key": txn.idempotency_key,
        "request_hash": txn.request_hash,
        "reverses_id": txn.reverses_id,
        "period": txn.period,
        "memo": txn.memo,
        "metadata": txn.metadata_json,
        "created_at": timestamp(txn.created_at),
        "legs": sorted(legs),
    }


def flag_event_record(event, flag) -> dict:
    """The hashed content of a review event, including the flag it is about."""
    return {
        "type": "flag_event",
        "federation": event.federation,
        "seq": event.seq,
        "status": event.status,
        "actor": event.actor,
        "note": event.note,
        "created_at": timestamp(event.created_at),
        "flag": {
            "id": flag.id,
            "client_id": flag.client_id,
            "method": flag.method,
            "period": flag.period,
            "score": flag.score,
            "evidence": flag.evidence_json,
            "created_at": timestamp(flag.created_at),
        },
    }
