"""ProToken ledger: contribution-based rewards, suspicious-client screening and payout exports.

A library on SQLAlchemy 2 over Postgres schema ``ledger`` (migrated by alembic
from ``migrations/``). It never imports Django: the platform calls the public
API below, inside its own transaction via `session_on_connection` when ledger
writes must commit together with Django's. Money is always an ``int`` of minor
units. Every write function takes a `Session` as its first argument and
keyword-only arguments, and never commits: the caller's unit of work does.
Bad input raises a `LedgerError` subclass whose message says what to fix.

Database
    migrate.upgrade(url: str | None = None) -> None           alembic upgrade head
    db.get_engine(url=None) -> Engine; db.dispose_engine() -> None
    db.session_scope(url=None) -> ContextManager[Session]      commit on success, rollback on error
    db.session_on_connection(dbapi_connection) -> Session      rides an owner's psycopg 3 transaction;
                                                               commit/rollback/close never reach it

Double entry (ledger.journal)
    Leg(kind, client_id, amount, currency); transfer(source, destination, amount, currency) -> list[Leg]
    post_transaction(session, *, federation, kind, legs, idempotency_key, description="", metadata=None)
        -> Receipt(id, federation, seq, kind, idempotency_key, hash, created_at, metadata, replayed)
    reverse_transaction(session, *, federation, transaction_id, reason="", idempotency_key=None) -> Receipt
    balances(session, federation, *, currency=None, client_id=None) -> list[Balance(kind, client_id,
        currency, balance)]
    account kinds: funding, pool (federation); payable, held, paid_out (per client)

Rewards (ledger.rewards; maths in ledger.allocation, pure)
    allocate(contributions: Mapping[str, number], pool: int, rules: AllocationRules | None) -> Allocation
    AllocationRules(minimum_payout=0, cap_per_client=None, excluded=frozenset(), flagged=frozenset(),
        flagged_policy="hold" | "exclude")
    aggregate(rows: Iterable[(client_id, share)]) -> dict[str, Fraction]
    fund_pool(session, *, federation, amount, currency, idempotency_key) -> Receipt
    post_allocation(session, *, federation, period, currency, pool_amount, contributions, rules=None,
        basis="sequence_share" | "token_mass", idempotency_key=None) -> AllocationReceipt
    release_held(session, *, federation, client_id, actor="") -> list[Receipt]
    forfeit_held(session, *, federation, client_id, actor="") -> list[Receipt]

Screening (maths in ledger.screening, pure; storage and review in ledger.flags)
    EvidenceRecord(generation_id, round_id, shares, harmful=False, token_top_clients=(), response=None)
    HarmPolicy(patterns=(), keywords=(), name="policy")
    screen_evidence(records, baseline=None, config=EvidenceConfig(), policy=None) -> ScreeningResult
    RoundUpdates(round_id, updates: {client: array | {module: array}}, reference=None)
    screen_updates(rounds: Iterable[RoundUpdates | RoundStatistics], config=UpdateConfig()) -> ScreeningResult
        (ScreeningResult.findings: list[Finding(client_id, method, score, p_value, q_value, evidence)],
         .flagged: set[str], .table: per-client statistics)
    inputs.rounds_statistics(folders, modules=None) -> list[RoundStatistics]   protoken-round/1 folders
    inputs.read_evidence(path) / read_contributions(path) / contributions_from_table(session, table, ...)
    record_findings(session, *, federation, period, findings, actor="screening") -> list[FlagView]
    review_flag(session, *, federation, flag_id, state, actor, note="", release=True) -> Review
    list_flags(session, federation, *, state=None, client_id=None) -> list[FlagView]
    blocking_clients(session, federation) -> set[str]

Exports and audit
    export_payouts(session, *, federation, period, currency) -> PayoutFiles (.csv, .json, .csv_sha256,
        .json_sha256, .lines, .write(directory))
    verify(session, federation=None) -> VerifyReport(ok, problems, heads, records, entries, exports)
    journal.get_transaction(session, federation, *, transaction_id=None, seq=None) -> Transaction (ORM)

Command line: ``python -m ledger {allocate,screen,export,verify,balances,review} --help``.
"""

from ledger.allocation import Allocation, AllocationRules, aggregate, allocate
from ledger.db import dispose_engine, get_engine, session_on_connection, session_scope
from ledger.errors import (
    HoldActive,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    InvalidTransition,
    LedgerError,
    NotFound,
    NothingToAllocate,
    NothingToExport,
    NotReversible,
    TamperDetected,
    UnbalancedTransaction,
)
from ledger.exports import PayoutFiles, export_payouts
from ledger.flags import FlagView, blocking_clients, list_flags, record_findings, review_flag
from ledger.journal import Balance, Leg, Receipt, balances, post_transaction, reverse_transaction, transfer
from ledger.rewards import AllocationReceipt, forfeit_held, fund_pool, post_allocation, release_held
from ledger.screening import (
    EvidenceConfig,
    EvidenceRecord,
    Finding,
    HarmPolicy,
    RoundStatistics,
    RoundUpdates,
    ScreeningResult,
    UpdateConfig,
    screen_evidence,
    screen_updates,
)
from ledger.verify import VerifyReport, verify

__all__ = [
    "Allocation", "AllocationReceipt", "AllocationRules", "Balance", "EvidenceConfig", "EvidenceRecord",
    "Finding", "FlagView", "HarmPolicy", "HoldActive", "IdempotencyConflict",
    "InsufficientFunds", "InvalidInput", "InvalidTransition", "LedgerError", "Leg", "NotFound",
    "NotReversible", "NothingToAllocate", "NothingToExport", "PayoutFiles", "Receipt", "RoundStatistics",
    "RoundUpdates",
    "ScreeningResult", "TamperDetected", "UnbalancedTransaction", "UpdateConfig", "VerifyReport", "aggregate",
    "allocate", "balances", "blocking_clients", "dispose_engine", "export_payouts", "forfeit_held",
    "fund_pool", "get_engine", "list_flags", "post_allocation", "post_transaction", "record_findings",
    "release_held", "reverse_transaction", "review_flag", "screen_evidence", "screen_updates",
    "session_on_connection", "session_scope", "transfer", "verify",
]
