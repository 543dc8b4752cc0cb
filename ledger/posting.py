"""Posting balanced, idempotent, hash-chained ledger transactions.

`post` is the only writer of transactions and entries. Per federation it holds
the chain head's row lock for the rest of the database transaction, which
serialises postings of one federation (different federations post in
parallel) and makes "look up the idempotency key, then insert" race-free.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ledger import chain
from ledger.errors import IdempotencyConflict, InsufficientFunds, InvalidPosting, NotReversible
from ledger.models import ACCOUNT_KINDS, FEDERATION_ACCOUNTS, Account, Chain, Entry, Transaction

_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, order=True)
class Leg:
    """One side of a transfer: `amount` minor units into (positive) or out of (negative) an account."""

    kind: str
    client_id: str
    currency: str
    amount: int

    def __post_init__(self) -> None:
        if self.kind not in ACCOUNT_KINDS:
            raise InvalidPosting(f"unknown account kind {self.kind!r}; expected one of {ACCOUNT_KINDS}")
        if (self.client_id == "") != (self.kind in FEDERATION_ACCOUNTS):
            raise InvalidPosting(
                f"account kind {self.kind!r} {'takes no' if self.kind in FEDERATION_ACCOUNTS else 'needs a'} client id"
            )
        if not _CURRENCY.match(self.currency):
            raise InvalidPosting(f"currency must be three capital letters (ISO 4217), got {self.currency!r}")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount == 0:
            raise InvalidPosting(f"amount must be a non-zero integer of minor units, got {self.amount!r}")

    @property
    def account_key(self) -> tuple[str, str, str]:
        return (self.kind, self.client_id, self.currency)

    def as_list(self) -> list:
        return [self.kind, self.client_id, self.currency, self.amount]


def transfer(src: tuple[str, str], dst: tuple[str, str], amount: int, currency: str) -> list[Leg]:
    """Two legs moving `amount` from account (kind, client) `src` to `dst`."""
    return [Leg(src[0], src[1], currency, -amount), Leg(dst[0], dst[1], currency, amount)]


def check_balanced(legs: Sequence[Leg]) -> None:
    if len(legs) < 2:
        raise InvalidPosting("a transaction needs at least two entries")
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        totals[leg.currency] += leg.amount
    unbalanced = {c: t for c, t in totals.items() if t != 0}
    if unbalanced:
        raise InvalidPosting(f"entries must sum to zero per currency; they sum to {unbalanced}")


def post(
    session: Session,
    *,
    federation: str,
    kind: str,
    idempotency_key: str,
    legs: Sequence[Leg],
    period: str | None = None,
    memo: str = "",
    metadata: dict | None = None,
    reverses_id: int | None = None,
    _skip_checks: bool = False,  # tests only: prove the database refuses what Python would
) -> Transaction:
    """Post one balanced transaction, or return the one already posted under this key.

    The same key with the same body returns the original transaction unchanged;
    the same key with a different body raises `IdempotencyConflict`.
    """
    legs = list(legs)
    if not federation or not idempotency_key:
        raise InvalidPosting("federation and idempotency_key are required")
    if not _skip_checks:
        check_balanced(legs)
    metadata_json = chain.canonical_json(metadata or {})
    req_hash = chain.request_hash(
        kind=kind,
        legs=[leg.as_list() for leg in legs],
        period=period,
        memo=memo,
        metadata_json=metadata_json,
        reverses_id=reverses_id,
    )
    head = lock_chain(session, federation)
    existing = session.scalar(
        select(Transaction).where(
            Transaction.federation == federation, Transaction.idempotency_key == idempotency_key
        )
    )
    if existing is not None:
        if existing.request_hash != req_hash:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was already used for transaction {existing.id} "
                "with a different request; use a new key for a new request"
            )
        return existing
    accounts = ensure_accounts(session, federation, {leg.account_key for leg in legs})
    if not _skip_checks:
        _check_funds(accounts, legs)
    txn = Transaction(
        federation=federation,
        seq=head.seq + 1,
        kind=kind,
        idempotency_key=idempotency_key,
        request_hash=req_hash,
        reverses_id=reverses_id,
        period=period,
        memo=memo,
        metadata_json=metadata_json,
        created_at=datetime.now(UTC),
        prev_hash=head.head,
    )
    txn.hash = chain.link(head.head, chain.transaction_record(txn, [leg.as_list() for leg in legs]))
    session.add(txn)
    session.flush()
    _insert_entries(session, txn.id, accounts, legs)
    head.seq, head.head = txn.seq, txn.hash
    session.flush()
    return txn


def lock_chain(session: Session, federation: str) -> Chain:
    """The federation's chain head, row-locked until the database transaction ends."""
    session.execute(
        pg_insert(Chain)
        .values(federation=federation, seq=0, head=chain.GENESIS)
        .on_conflict_do_nothing(index_elements=["federation"])
    )
    return session.scalars(
        select(Chain)
        .where(Chain.federation == federation)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def ensure_accounts(
    session: Session, federation: str, keys: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], Account]:
    """Get or create the accounts (kind, client, currency) of one federation, in one round trip each way."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    rows = [
        {
            "federation": federation,
            "kind": k,
            "client_id": c,
            "currency": cur,
            "allow_negative": k == "funding",
        }
        for k, c, cur in keys
    ]
    session.execute(pg_insert(Account).values(rows).on_conflict_do_nothing())
    found = session.scalars(
        select(Account)
        .where(
            Account.federation == federation,
            tuple_(Account.kind, Account.client_id, Account.currency).in_(keys),
        )
        .execution_options(populate_existing=True)
    ).all()
    return {a.key: a for a in found}


def _check_funds(accounts: dict, legs: Sequence[Leg]) -> None:
    after: dict[tuple, int] = {}
    for leg in legs:
        after[leg.account_key] = after.get(leg.account_key, accounts[leg.account_key].balance) + leg.amount
    short = {k: v for k, v in after.items() if v < 0 and k[0] != "funding"}
    if short:
        detail = ", ".join(f"{k}/{c or '-'} {cur} would be {v}" for (k, c, cur), v in sorted(short.items()))
        raise InsufficientFunds(f"posting would overdraw: {detail}")


def _insert_entries(session: Session, txn_id: int, accounts: dict, legs: Sequence[Leg]) -> None:
    # Credits first, so an account that is credited and debited in one transaction never dips below zero.
    rows = [
        {
            "transaction_id": txn_id,
            "account_id": accounts[leg.account_key].id,
            "currency": leg.currency,
            "amount": leg.amount,
        }
        for leg in sorted(legs, key=lambda leg: -leg.amount)
    ]
    session.execute(Entry.__table__.insert(), rows)
    for leg in legs:  # keep the loaded accounts in step with the trigger-maintained balance
        account = accounts[leg.account_key]
        session.expire(account, ["balance"])


def legs_of(txn: Transaction) -> list[Leg]:
    return [Leg(e.account.kind, e.account.client_id, e.currency, e.amount) for e in txn.entries]


def reverse(
    session: Session,
    *,
    federation: str,
    transaction_id: int,
    idempotency_key: str | None = None,
    memo: str = "",
) -> Transaction:
    """Post the exact opposite of a transaction, referencing it. Entries are never edited."""
    original = session.get(Transaction, transaction_id)
    if original is None or original.federation != federation:
        raise NotReversible(f"no transaction {transaction_id} in federation {federation!r}")
    if original.reverses_id is not None:
        raise NotReversible(
            f"transaction {transaction_id} is itself a reversal; post a new transaction instead"
        )
    key = idempotency_key or f"reversal:{transaction_id}"
    done = session.scalar(select(Transaction).where(Transaction.reverses_id == transaction_id))
    if done is not None and done.idempotency_key != key:
        raise NotReversible(f"transaction {transaction_id} was already reversed by transaction {done.id}")
    return post(
        session,
        federation=federation,
        kind="reversal",
        idempotency_key=key,
        legs=[Leg(leg.kind, leg.client_id, leg.currency, -leg.amount) for leg in legs_of(original)],
        period=original.period,
        memo=memo or f"reversal of transaction {transaction_id}",
        reverses_id=transaction_id,
    )
