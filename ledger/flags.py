"""Flags on suspicious clients and their review workflow, recorded in the federation's hash chain.

A flag is an immutable finding (client, method, score, p/q-values, evidence)
for a period; recording the same (period, method, client) twice returns the
existing flag. Its review state is its latest event; events are appended,
never edited, each linked into the federation's chain like a transaction:

    open --> confirmed --> dismissed --> open
      \\-------------------> dismissed

While a client has an open or confirmed flag it is *blocked*: allocations
put its amounts in `held`, exports skip it and `release_held` refuses.
Dismissing its last blocking flag releases its held amounts (unless
``release=False``); a confirmed flag allows `forfeit_held`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from ledger import canonical, chain
from ledger.errors import InvalidInput, InvalidTransition, NotFound
from ledger.models import FLAG_STATES, Flag, FlagEvent
from ledger.screening import Finding

TRANSITIONS = {"open": ("confirmed", "dismissed"), "confirmed": ("dismissed",), "dismissed": ("open",)}
BLOCKING = ("open", "confirmed")


@dataclass(frozen=True)
class FlagView:
    id: int
    federation: str
    client_id: str
    period: str
    method: str
    score: float
    p_value: float | None
    q_value: float | None
    evidence: dict[str, Any]
    created_at: datetime
    state: str
    history: list[dict[str, Any]] = field(default_factory=list)  # [{seq, state, actor, note, at}]

    @classmethod
    def of(cls, flag: Flag) -> FlagView:
        history = [{"seq": e.seq, "state": e.state, "actor": e.actor, "note": e.note,
                    "at": canonical.timestamp(e.created_at)} for e in flag.events]
        return cls(flag.id, flag.federation, flag.client_id, flag.period, flag.method, flag.score, flag.p_value,
                   flag.q_value, flag.evidence, flag.created_at, history[-1]["state"], history)


def record_findings(session: Session, *, federation: str, period: str, findings: Iterable[Finding],
                    actor: str = "screening") -> list[FlagView]:
    """Store each finding as an open flag (an existing flag for the same period/method/client is kept)."""
    head = chain.lock_head(session, federation)
    canonical.period_label(period)
    views = []
    for finding in findings:
        flag = _existing_flag(session, federation, period, finding)
        if flag is None:
            flag = _insert_flag(session, federation, period, finding)
            _append_event(session, head, flag, "open", actor, "recorded by screening")
        views.append(FlagView.of(_load(session, federation, flag.id)))
    return views


def _existing_flag(session: Session, federation: str, period: str, finding: Finding) -> Flag | None:
    return session.execute(select(Flag).where(
        Flag.federation == federation, Flag.period == period, Flag.method == finding.method,
        Flag.client_id == finding.client_id)).scalar_one_or_none()


def _insert_flag(session: Session, federation: str, period: str, finding: Finding) -> Flag:
    canonical.client_id(finding.client_id)
    if not isinstance(finding.method, str) or not 1 <= len(finding.method) <= 64:
        raise InvalidInput(f"flag method must be a 1-64 character name, got {finding.method!r}")
    row = {"id": chain.reserve_ids(session, flags=1)["flags"][0], "federation": federation, "client_id": finding.client_id,
           "period": period, "method": finding.method, "score": _number(finding.score, "score"),
           "p_value": _optional(finding.p_value, "p_value"), "q_value": _optional(finding.q_value, "q_value"),
           "evidence": canonical.normalize(finding.evidence, "evidence"), "created_at": canonical.now()}
    session.execute(insert(Flag), [row])
    return Flag(**row)


def _number(value: Any, what: str) -> float:
    result = canonical.normalize(value, what)
    if not isinstance(result, int | float) or isinstance(result, bool):
        raise InvalidInput(f"flag {what} must be a finite number, got {value!r}")
    return float(result)


def _optional(value: Any, what: str) -> float | None:
    return None if value is None else _number(value, what)


def _append_event(session: Session, head, flag: Flag, state: str, actor: str, note: str) -> None:
    if not isinstance(actor, str) or not 1 <= len(actor) <= 128:
        raise InvalidInput(f"actor must be a 1-128 character name, got {actor!r}")
    canonical.normalize(note, "note")
    row = {"id": chain.reserve_ids(session, flag_events=1)["flag_events"][0], "federation": head.name, "seq": head.head_seq + 1,
           "state": state, "actor": actor, "note": note, "created_at": canonical.now()}
    row["hash"] = canonical.chain_hash(head.head_hash, chain.flag_event_body(row, chain.flag_body(flag)))
    session.execute(insert(FlagEvent), [{**row, "flag_id": flag.id, "prev_hash": head.head_hash}])
    chain.advance_head(session, head, row["seq"], row["hash"])


def _load(session: Session, federation: str, flag_id: int) -> Flag:
    flag = session.execute(
        select(Flag).where(Flag.id == flag_id, Flag.federation == federation)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if flag is None:
        raise NotFound(f"federation {federation!r} has no flag {flag_id}")
    return flag


@dataclass(frozen=True)
class Review:
    flag: FlagView
    previous_state: str
    changed: bool  # False when the flag was already in that state (a retried review)
    released: list = field(default_factory=list)  # receipts of held amounts released by a dismissal


def review_flag(session: Session, *, federation: str, flag_id: int, state: str, actor: str, note: str = "",
                release: bool = True) -> Review:
    """Move a flag to `state`; dismissing a client's last blocking flag releases its held payouts."""
    if state not in FLAG_STATES:
        raise InvalidInput(f"state must be one of {FLAG_STATES}, got {state!r}")
    head = chain.lock_head(session, federation)
    flag = _load(session, federation, flag_id)
    previous = flag.events[-1].state
    if previous == state:
        return Review(FlagView.of(flag), previous, changed=False)
    if state not in TRANSITIONS[previous]:
        raise InvalidTransition(f"flag {flag_id} is {previous}; it can move to {' or '.join(TRANSITIONS[previous])}, "
                                f"not {state}")
    _append_event(session, head, flag, state, actor, note)
    released = []
    if state == "dismissed" and release and not client_states(session, federation, flag.client_id) & set(BLOCKING):
        from ledger.rewards import release_held  # rewards depends on flags; import here to avoid a cycle

        released = release_held(session, federation=federation, client_id=flag.client_id, actor=actor)
    return Review(FlagView.of(_load(session, federation, flag_id)), previous, changed=True, released=released)


def _current_states():
    latest = (select(FlagEvent.flag_id, func.max(FlagEvent.seq).label("seq"))
              .group_by(FlagEvent.flag_id).subquery())
    return (select(Flag.id, Flag.client_id, FlagEvent.state)
            .join(latest, latest.c.flag_id == Flag.id)
            .join(FlagEvent, (FlagEvent.flag_id == Flag.id) & (FlagEvent.seq == latest.c.seq)))


def client_states(session: Session, federation: str, client_id: str) -> set[str]:
    """The current states of all flags on one client."""
    query = _current_states().where(Flag.federation == federation, Flag.client_id == client_id)
    return {state for _, _, state in session.execute(query)}


def blocking_clients(session: Session, federation: str) -> set[str]:
    """Clients with at least one open or confirmed flag."""
    query = _current_states().where(Flag.federation == federation, FlagEvent.state.in_(BLOCKING))
    return {client for _, client, _ in session.execute(query)}


def list_flags(session: Session, federation: str, *, state: str | None = None,
               client_id: str | None = None) -> list[FlagView]:
    """Flags of a federation with their current state and history, oldest first."""
    if state is not None and state not in FLAG_STATES:
        raise InvalidInput(f"state must be one of {FLAG_STATES}, got {state!r}")
    query = select(Flag).where(Flag.federation == canonical.federation_id(federation)).order_by(Flag.id)
    if client_id is not None:
        query = query.where(Flag.client_id == canonical.client_id(client_id))
    views = [FlagView.of(flag) for flag in session.execute(query).scalars()]
    return [v for v in views if state is None or v.state == state]
