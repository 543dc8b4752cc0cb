"""Posting: balanced, idempotent, hash-chained transactions, and their reversals.

A caller describes a transaction as `Leg`s (account kind, client, signed
amount, currency). `post_transaction` then, inside the caller's session:
1. locks the federation's chain head (serialising writers of a federation);
2. looks the idempotency key up: the same key with the same request hash
   returns the original transaction (``replayed=True``) and writes nothing;
   the same key with another hash raises `IdempotencyConflict`;
3. checks the legs balance per currency, creates missing accounts, reserves
   the ids, hashes the record into the chain and inserts it.

The request hash covers what the caller asked for, not what the ledger
derived from it (`ledger.rewards` hashes an allocation's inputs, not its
amounts), so a retry is recognised even when derived state has moved on.
Nothing here commits: the caller's unit of work decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ledger import canonical, chain
from ledger.errors import IdempotencyConflict, InvalidInput, NotFound, NotReversible, UnbalancedTransaction
from ledger.models import ACCOUNT_KINDS, FEDERATION_ACCOUNTS, TRANSACTION_KINDS, Account, Entry, Transaction

AccountKey = tuple[str, str, str]  # (kind, client_id, currency)


@dataclass(frozen=True)
class Leg:
    """One entry to post: `amount` minor units into (kind, client) in `currency`; negative = out of."""

    kind: str
    client_id: str
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if self.kind not in ACCOUNT_KINDS:
            raise InvalidInput(f"account kind must be one of {ACCOUNT_KINDS}, got {self.kind!r}")
        if self.kind in FEDERATION_ACCOUNTS and self.client_id != "":
            raise InvalidInput(f"a {self.kind} account belongs to the federation: client_id must be ''")
        if self.kind not in FEDERATION_ACCOUNTS:
            canonical.client_id(self.client_id)
        canonical.amount(self.amount)
        canonical.currency_code(self.currency)

    @property
    def account(self) -> AccountKey:
        return (self.kind, self.client_id, self.currency)


def transfer(source: tuple[str, str], destination: tuple[str, str], amount: int, currency: str) -> list[Leg]:
    """Two legs moving `amount` (> 0) from (kind, client) `source` to `destination`."""
    canonical.amount(amount)
    if amount < 0:
        raise InvalidInput(f"a transfer amount must be positive, got {amount}")
    return [Leg(*source, -amount, currency), Leg(*destination, amount, currency)]


@dataclass(frozen=True)
class Receipt:
    """What a posting returns; `replayed` says the key was seen before and nothing was written."""

    id: int
    federation: str
    seq: int
    kind: str
    idempotency_key: str
    hash: str
    created_at: datetime
    metadata: dict[str, Any]
    replayed: bool = False

    @classmethod
    def of(cls, txn: Transaction, replayed: bool) -> Receipt:
        return cls(txn.id, txn.federation, txn.seq, txn.kind, txn.idempotency_key, txn.hash,
                   txn.created_at, txn.meta, replayed)


def check_balanced(legs: Sequence[Leg]) -> None:
    if not legs:
        raise UnbalancedTransaction("a transaction needs at least two entries; got none")
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        totals[leg.currency] += leg.amount
    off = {c: t for c, t in totals.items() if t != 0}
    if off:
        raise UnbalancedTransaction(f"entries must sum to zero per currency; they sum to {dict(sorted(off.items()))}")


def find_replay(session: Session, federation: str, key: str, request_hash: str) -> Transaction | None:
    """The transaction posted under `key`, if any; IdempotencyConflict if its request differs."""
    existing = session.execute(
        select(Transaction).where(Transaction.federation == federation, Transaction.idempotency_key == key)
    ).scalar_one_or_none()
    if existing is not None and existing.request_hash != request_hash:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was used in federation {federation!r} for a different request "
            f"(transaction seq {existing.seq}); use a new key for a new request"
        )
    return existing


def ensure_accounts(session: Session, federation: str, keys: Iterable[AccountKey]) -> dict[AccountKey, int]:
    """Account ids for (kind, client, currency) keys, creating the missing accounts."""
    keys = sorted(set(keys))
    found = _account_ids(session, federation, keys)
    missing = [key for key in keys if key not in found]
    if missing:  # usually only the first posting of a client creates accounts
        now = canonical.now()
        rows = [{"federation": federation, "kind": k, "client_id": c, "currency": cur, "created_at": now}
                for k, c, cur in missing]
        session.execute(pg_insert(Account).values(rows).on_conflict_do_nothing(
            index_elements=["federation", "kind", "client_id", "currency"]))
        found.update(_account_ids(session, federation, missing))
    return found


def _account_ids(session: Session, federation: str, keys: list[AccountKey]) -> dict[AccountKey, int]:
    if not keys:
        return {}
    rows = session.execute(
        select(Account.kind, Account.client_id, Account.currency, Account.id).where(
            Account.federation == federation,
            tuple_(Account.kind, Account.client_id, Account.currency).in_(keys),
        )
    ).all()
    return {(k, c, cur): id_ for k, c, cur, id_ in rows}


def post_transaction(session: Session, *, federation: str, kind: str, legs: Sequence[Leg], idempotency_key: str,
                     description: str = "", metadata: Mapping[str, Any] | None = None,
                     reverses_id: int | None = None) -> Receipt:
    """Post one balanced transaction (or return the original for a retried key)."""
    body = {"kind": kind, "legs": sorted([leg.kind, leg.client_id, leg.currency, leg.amount] for leg in legs),
            "description": description, "metadata": metadata or {}, "reverses_id": reverses_id}
    head = chain.lock_head(session, federation)
    request_hash = canonical.request_hash(body)
    existing = find_replay(session, federation, canonical.idempotency_key(idempotency_key), request_hash)
    if existing is not None:
        return Receipt.of(existing, replayed=True)
    return append_transaction(session, head, kind=kind, legs=legs, idempotency_key=idempotency_key,
                              request_hash=request_hash, description=description, metadata=metadata,
                              reverses_id=reverses_id)


def append_transaction(session: Session, head, *, kind: str, legs: Sequence[Leg], idempotency_key: str,
                       request_hash: str, description: str = "", metadata: Mapping[str, Any] | None = None,
                       reverses_id: int | None = None) -> Receipt:
    """Write a new transaction at the head of the chain; the caller holds the head lock."""
    if kind not in TRANSACTION_KINDS:
        raise InvalidInput(f"transaction kind must be one of {TRANSACTION_KINDS}, got {kind!r}")
    if not isinstance(description, str) or "\x00" in description:
        raise InvalidInput("description must be a string without NUL characters")
    check_balanced(legs)
    meta = canonical.normalize(dict(metadata or {}), "metadata")
    accounts = ensure_accounts(session, head.name, [leg.account for leg in legs])
    ids = chain.reserve_ids(session, transactions=1, entries=len(legs))
    txn_id = ids["transactions"][0]
    entries = [chain.EntryRow(entry_id, accounts[leg.account], *leg.account[:2], leg.currency, leg.amount)
               for entry_id, leg in zip(ids["entries"], legs, strict=True)]
    row = {"id": txn_id, "federation": head.name, "seq": head.head_seq + 1, "kind": kind,
           "idempotency_key": idempotency_key, "request_hash": request_hash, "description": description,
           "reverses_id": reverses_id, "created_at": canonical.now(), "prev_hash": head.head_hash}
    row["hash"] = canonical.chain_hash(head.head_hash, chain.transaction_body({**row, "metadata": meta}, entries))
    session.execute(insert(Transaction), [{**row, "meta": meta}])
    session.execute(insert(Entry), [{"id": e.id, "transaction_id": txn_id, "account_id": e.account_id,
                                     "currency": e.currency, "amount": e.amount} for e in entries])
    chain.advance_head(session, head, row["seq"], row["hash"])
    return Receipt(txn_id, head.name, row["seq"], kind, idempotency_key, row["hash"], row["created_at"], meta)


def get_transaction(session: Session, federation: str, *, transaction_id: int | None = None,
                    seq: int | None = None) -> Transaction:
    """A transaction by id or by its seq in the federation's chain."""
    if (transaction_id is None) == (seq is None):
        raise InvalidInput("give exactly one of transaction_id or seq")
    query = select(Transaction).where(Transaction.federation == canonical.federation_id(federation))
    if transaction_id is not None:
        query, what = query.where(Transaction.id == transaction_id), f"id {transaction_id}"
    else:
        query, what = query.where(Transaction.seq == seq), f"seq {seq}"
    txn = session.execute(query).scalar_one_or_none()
    if txn is None:
        raise NotFound(f"federation {federation!r} has no transaction with {what}")
    return txn


def legs_of(txn: Transaction) -> list[Leg]:
    return [Leg(e.account.kind, e.account.client_id, e.amount, e.currency) for e in txn.entries]


def reverse_transaction(session: Session, *, federation: str, transaction_id: int, reason: str = "",
                        idempotency_key: str | None = None) -> Receipt:
    """Post the exact opposite of a transaction, linked to it; a transaction is reversed at most once."""
    head = chain.lock_head(session, federation)
    original = get_transaction(session, federation, transaction_id=transaction_id)
    key = idempotency_key or f"reversal:{original.id}"
    request_hash = canonical.request_hash({"reverses_id": original.id, "reason": reason})
    existing = find_replay(session, federation, canonical.idempotency_key(key), request_hash)
    if existing is not None:
        return Receipt.of(existing, replayed=True)
    _check_reversible(session, original)
    legs = [Leg(leg.kind, leg.client_id, -leg.amount, leg.currency) for leg in legs_of(original)]
    metadata = {"reverses_seq": original.seq, "reason": reason, **_period_of(original)}
    return append_transaction(session, head, kind="reversal", legs=legs, idempotency_key=key,
                              request_hash=request_hash, description=f"reversal of seq {original.seq}",
                              metadata=metadata, reverses_id=original.id)


def _period_of(txn: Transaction) -> dict:
    return {"period": txn.meta["period"]} if "period" in txn.meta else {}


def _check_reversible(session: Session, original: Transaction) -> None:
    if original.kind == "reversal":
        raise NotReversible(f"transaction seq {original.seq} is itself a reversal; post a new transaction instead")
    if original.kind == "payout":
        raise NotReversible(f"transaction seq {original.seq} is a payout that was exported; money that left "
                            "cannot be un-exported, post an adjustment instead")
    reversed_by = session.execute(
        select(Transaction.seq).where(Transaction.reverses_id == original.id)
    ).scalar_one_or_none()
    if reversed_by is not None:
        raise NotReversible(f"transaction seq {original.seq} was already reversed by seq {reversed_by}")


@dataclass(frozen=True)
class Balance:
    kind: str
    client_id: str
    currency: str
    balance: int


def balances(session: Session, federation: str, *, currency: str | None = None,
             client_id: str | None = None) -> list[Balance]:
    """Every account's balance (sum of its entries), ordered by kind, client and currency."""
    query = (
        select(Account.kind, Account.client_id, Account.currency, func.coalesce(func.sum(Entry.amount), 0))
        .join(Entry, Entry.account_id == Account.id, isouter=True)
        .where(Account.federation == canonical.federation_id(federation))
        .group_by(Account.id).order_by(Account.kind, Account.client_id, Account.currency)
    )
    if currency is not None:
        query = query.where(Account.currency == canonical.currency_code(currency))
    if client_id is not None:
        query = query.where(Account.client_id == canonical.client_id(client_id))
    return [Balance(k, c, cur, int(total)) for k, c, cur, total in session.execute(query)]


def account_balance(session: Session, federation: str, kind: str, client_id: str, currency: str) -> int:
    total = session.execute(
        select(func.coalesce(func.sum(Entry.amount), 0)).join(Account, Entry.account_id == Account.id).where(
            Account.federation == federation, Account.kind == kind, Account.client_id == client_id,
            Account.currency == currency)
    ).scalar_one()
    return int(total)
