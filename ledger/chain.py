"""The per-federation hash chain: the canonical bodies of transactions and flag events, and the head.

Every transaction and every flag event of a federation gets the next `seq`
(one counter for both) and ``hash = sha256(prev_hash || canonical(body))``,
where the body holds every stored column of the record, its entries (with
their accounts' identities) or its flag, and `prev_hash` is the hash of
record ``seq - 1`` (``0 * 64`` for the first). `ledger.verify` recomputes
the same bodies from the stored rows, so an edit of any hashed column, a
deleted or inserted record, or a reordering shows up as a mismatch.

Writers of one federation are serialised by a row lock on its
`federations` row (the chain head), which also makes the idempotency-key
lookup race-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ledger import canonical
from ledger.models import Federation


@dataclass(frozen=True)
class EntryRow:
    id: int
    account_id: int
    kind: str
    client_id: str
    currency: str
    amount: int

    def as_list(self) -> list:
        return [self.id, self.account_id, self.kind, self.client_id, self.currency, self.amount]


TRANSACTION_FIELDS = ("id", "federation", "seq", "kind", "idempotency_key", "request_hash", "description",
                      "metadata", "reverses_id")
FLAG_EVENT_FIELDS = ("id", "federation", "seq", "state", "actor", "note")


def transaction_body(fields: Mapping[str, Any], entries: Sequence[EntryRow]) -> dict:
    """The hashed body of a transaction: its stored columns (minus the hashes) and its entries."""
    body = {name: fields[name] for name in TRANSACTION_FIELDS}
    body.update(record="transaction", created_at=canonical.timestamp(fields["created_at"]),
                entries=[e.as_list() for e in sorted(entries, key=lambda e: e.id)])
    return body


def flag_body(flag: Any) -> dict:
    """The hashed content of a flag (an ORM `Flag` or anything with the same attributes)."""
    return {
        "id": flag.id, "federation": flag.federation, "client_id": flag.client_id, "period": flag.period,
        "method": flag.method, "score": flag.score, "p_value": flag.p_value, "q_value": flag.q_value,
        "evidence": flag.evidence, "created_at": canonical.timestamp(flag.created_at),
    }


def flag_event_body(fields: Mapping[str, Any], flag: dict | None) -> dict:
    """The hashed body of a flag event: its stored columns (minus the hashes) and its flag's content."""
    body = {name: fields[name] for name in FLAG_EVENT_FIELDS}
    body.update(record="flag_event", created_at=canonical.timestamp(fields["created_at"]), flag=flag)
    return body


@dataclass
class Head:
    """The locked chain head of a federation: the next record gets seq head_seq + 1 and links to head_hash."""

    name: str
    head_seq: int
    head_hash: str


def lock_head(session: Session, federation: str) -> Head:
    """The federation's chain head, created if new, locked FOR UPDATE until the caller's commit."""
    canonical.federation_id(federation)
    query = (select(Federation.name, Federation.head_seq, Federation.head_hash)
             .where(Federation.name == federation).with_for_update())
    row = session.execute(query).one_or_none()
    if row is None:  # a new federation: create its head (a concurrent creator makes this a no-op)
        session.execute(
            pg_insert(Federation)
            .values(name=federation, head_seq=0, head_hash=canonical.GENESIS_HASH, created_at=canonical.now())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = session.execute(query).one()
    return Head(*row)


def advance_head(session: Session, head: Head, seq: int, hash_: str) -> None:
    session.execute(
        update(Federation).where(Federation.name == head.name).values(head_seq=seq, head_hash=hash_)
        .execution_options(synchronize_session=False)
    )
    head.head_seq, head.head_hash = seq, hash_


ID_TABLES = ("transactions", "entries", "flags", "flag_events")


def reserve_ids(session: Session, **counts: int) -> dict[str, list[int]]:
    """Reserve identity values in one round trip, so ids can be hashed before the rows are inserted."""
    unknown = set(counts) - set(ID_TABLES)
    if unknown:
        raise ValueError(f"no identity sequence for {sorted(unknown)}")
    parts = [f"ARRAY(SELECT nextval(pg_get_serial_sequence('ledger.{t}', 'id')) FROM generate_series(1, :{t}))"
             for t in counts]
    row = session.execute(text("SELECT " + ", ".join(parts)), counts).one()
    return {table: sorted(ids) for table, ids in zip(counts, row, strict=True)}
