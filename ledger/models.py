"""Typed SQLAlchemy models of Postgres schema ``ledger`` (migrated by alembic from ``migrations/``).

Design:
- Double entry. An *account* is (federation, kind, client, currency); a
  *transaction* owns *entries* with signed integer amounts in minor units. A
  transfer of x from A to B is the pair (A, -x), (B, +x), so a balance is the
  plain sum of an account's entries and every transaction sums to zero per
  currency. The database enforces that at commit with a deferred constraint
  trigger (migration 0001); Python checks it first only to give a nicer error.
- Append-only. Accounts, transactions, entries, flags, flag events, exports
  and export items refuse UPDATE, DELETE and TRUNCATE in the database.
  Corrections are reversal transactions (`reverses_id`, unique: at most one
  reversal per transaction); a flag's review state is its latest event.
- Hash chain. Transactions and flag events of a federation share one
  sequence (`seq` 1, 2, 3 ...) and each stores ``hash = sha256(prev_hash ||
  canonical body)``; `federations` holds the head (the only mutable row, and
  the row lock that serialises writers of one federation).
- No foreign keys to Django tables; federations and clients are plain ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
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
FEDERATION_ACCOUNTS = ("funding", "pool")  # every other kind belongs to one client
TRANSACTION_KINDS = ("funding", "allocation", "release", "forfeit", "payout", "reversal", "adjustment")
FLAG_STATES = ("open", "confirmed", "dismissed")

Timestamp = DateTime(timezone=True)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


class Federation(Base):
    """Chain head of one federation: the next record gets seq head_seq + 1 and links to head_hash."""

    __tablename__ = "federations"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    head_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("federation", "kind", "client_id", "currency"),
        UniqueConstraint("id", "currency"),  # target of the entries' (account, currency) key
        CheckConstraint(_in("kind", ACCOUNT_KINDS), name="kind"),
        CheckConstraint(f"(client_id = '') = ({_in('kind', FEDERATION_ACCOUNTS)})", name="owner"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    federation: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    client_id: Mapped[str] = mapped_column(String(64))  # '' for federation accounts
    currency: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("federation", "seq"),
        UniqueConstraint("federation", "idempotency_key"),
        UniqueConstraint("reverses_id"),
        CheckConstraint(_in("kind", TRANSACTION_KINDS), name="kind"),
        CheckConstraint("(kind = 'reversal') = (reverses_id IS NOT NULL)", name="reversal_link"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        Index(None, "federation", "kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    federation: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    reverses_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("transactions.id"))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    entries: Mapped[list[Entry]] = relationship(
        back_populates="transaction", order_by="Entry.id", lazy="selectin", viewonly=True
    )


class Entry(Base):
    __tablename__ = "entries"
    __table_args__ = (
        ForeignKeyConstraint(["account_id", "currency"], ["accounts.id", "accounts.currency"]),
        CheckConstraint("amount <> 0", name="amount_nonzero"),
        Index(None, "transaction_id"),
        Index(None, "account_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("transactions.id"))
    account_id: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(12))
    amount: Mapped[int] = mapped_column(BigInteger)

    transaction: Mapped[Transaction] = relationship(back_populates="entries", viewonly=True)
    account: Mapped[Account] = relationship(
        primaryjoin="Entry.account_id == Account.id", foreign_keys="Entry.account_id", viewonly=True,
        lazy="joined",
    )


class Flag(Base):
    """A screening finding about one client; immutable. Its state is the latest FlagEvent."""

    __tablename__ = "flags"
    __table_args__ = (
        UniqueConstraint("federation", "period", "method", "client_id"),
        Index(None, "federation", "client_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    federation: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(Timestamp)

    events: Mapped[list[FlagEvent]] = relationship(order_by="FlagEvent.seq", lazy="selectin", viewonly=True)


class FlagEvent(Base):
    """One review step of a flag (open, confirmed, dismissed), linked into the federation's chain."""

    __tablename__ = "flag_events"
    __table_args__ = (
        UniqueConstraint("federation", "seq"),
        CheckConstraint(_in("state", FLAG_STATES), name="state"),
        Index(None, "flag_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    flag_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("flags.id"))
    federation: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class PayoutExport(Base):
    """A payout run: the files' hashes and the payout transaction that moved payable -> paid_out."""

    __tablename__ = "payout_exports"
    __table_args__ = (
        UniqueConstraint("federation", "period", "currency"),
        UniqueConstraint("transaction_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    federation: Mapped[str] = mapped_column(String(128))
    period: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(12))
    transaction_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("transactions.id"))
    csv_sha256: Mapped[str] = mapped_column(String(64))
    json_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class ExportItem(Base):
    """Marks one payable entry as paid by one export; the primary key makes double payment impossible."""

    __tablename__ = "export_items"
    __table_args__ = (Index(None, "export_id"),)

    entry_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("entries.id"), primary_key=True)
    export_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("payout_exports.id"))
    client_id: Mapped[str] = mapped_column(String(64))


APPEND_ONLY_TABLES = ("accounts", "transactions", "entries", "flags", "flag_events", "payout_exports",
                      "export_items")
