"""Typed SQLAlchemy models of the `ledger` schema.

The database, not this module, is the authority on the accounting rules; the
SQL that enforces them lives in the initial migration:

- every ledger transaction balances to zero per currency (deferred constraint trigger);
- transactions, entries, flags, flag events and exports are never updated or deleted;
- entries can only be added in the database transaction that created their
  ledger transaction;
- `Account.balance` is maintained by a trigger on entries and may not go
  negative except on funding accounts.

Amounts are signed integers in minor units (cents). A transfer of x from A to B
is two entries, (A, -x) and (B, +x); an account's balance is the sum of its entries.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA = "ledger"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ACCOUNT_KINDS = ("funding", "pool", "payable", "held", "paid_out")
FEDERATION_ACCOUNTS = ("funding", "pool")  # one per federation and currency, no client
FLAG_STATUSES = ("open", "confirmed", "dismissed")


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


class Chain(Base):
    """Head of one federation's hash chain; locked FOR UPDATE to append to it."""

    __tablename__ = "chains"

    federation: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head: Mapped[str] = mapped_column(String(64))


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("federation", "kind", "client_id", "currency"),
        UniqueConstraint("id", "currency"),  # target of the entries' (account, currency) key
        CheckConstraint(f"kind IN {ACCOUNT_KINDS!r}", name="kind"),
        CheckConstraint(f"(client_id = '') = (kind IN {FEDERATION_ACCOUNTS!r})", name="client_matches_kind"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint("allow_negative OR balance >= 0", name="no_overdraft"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    federation: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str] = mapped_column(Text, default="")
    currency: Mapped[str] = mapped_column(String(3))
    allow_negative: Mapped[bool] = mapped_column(Boolean, default=False)
    balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    @property
    def key(self) -> tuple[str, str, str]:
        """The account's natural key as the hash chain records it."""
        return (self.kind, self.client_id, self.currency)


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("federation", "seq"),
        UniqueConstraint("federation", "idempotency_key"),
        UniqueConstraint("reverses_id"),  # a transaction is reversed at most once
        Index(None, "federation", "kind", "period"),
        CheckConstraint("seq >= 1", name="seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    federation: Mapped[str] = mapped_column(Text)
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[str] = mapped_column(String(64))
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("transactions.id"), nullable=True)
    period: Mapped[str | None] = mapped_column(Text, nullable=True)
    memo: Mapped[str] = mapped_column(Text, default="")
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON, hashed as stored
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The database transaction that wrote this row; entries may only be added within it.
    db_xact: Mapped[int] = mapped_column(
        BigInteger, server_default=text("(pg_current_xact_id()::text)::bigint"), deferred=True
    )

    entries: Mapped[list[Entry]] = relationship(
        back_populates="transaction", order_by="Entry.id", lazy="selectin"
    )


class Entry(Base):
    __tablename__ = "entries"
    __table_args__ = (
        ForeignKeyConstraint(["account_id", "currency"], ["accounts.id", "accounts.currency"]),
        Index(None, "transaction_id"),
        Index(None, "account_id", "transaction_id"),
        CheckConstraint("amount <> 0", name="nonzero"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"))
    account_id: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)

    transaction: Mapped[Transaction] = relationship(back_populates="entries")
    account: Mapped[Account] = relationship(
        foreign_keys=[account_id], primaryjoin="Entry.account_id == Account.id", lazy="joined"
    )


class Flag(Base):
    """A suspicion about one client in one period, raised by one screening method."""

    __tablename__ = "flags"
    __table_args__ = (UniqueConstraint("federation", "method", "client_id", "period"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    federation: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    period: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)
    evidence_json: Mapped[str] = mapped_column(Text)  # canonical JSON, hashed as stored
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    events: Mapped[list[FlagEvent]] = relationship(
        back_populates="flag", order_by="FlagEvent.seq", lazy="selectin"
    )

    @property
    def status(self) -> str:
        return self.events[-1].status if self.events else "open"


class FlagEvent(Base):
    """One step of a flag's review workflow; part of the federation's hash chain."""

    __tablename__ = "flag_events"
    __table_args__ = (
        UniqueConstraint("federation", "seq"),
        Index(None, "flag_id"),
        CheckConstraint(f"status IN {FLAG_STATUSES!r}", name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id"))
    federation: Mapped[str] = mapped_column(Text)
    seq: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    flag: Mapped[Flag] = relationship(back_populates="events")


class Export(Base):
    """A payout export: the exact bytes handed to finance, and their hashes."""

    __tablename__ = "exports"
    __table_args__ = (UniqueConstraint("federation", "period", "currency"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    federation: Mapped[str] = mapped_column(Text)
    period: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), unique=True)
    csv_sha256: Mapped[str] = mapped_column(String(64))
    json_sha256: Mapped[str] = mapped_column(String(64))
    csv: Mapped[bytes] = mapped_column(LargeBinary)
    json: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    transaction: Mapped[Transaction] = relationship()
