"""Ledger core: accounts, balanced append-only transactions, flags and their reviews, payout exports.

Revision ID: 0001
Revises:
Create Date: 2026-12-03

The accounting rules live in Postgres so that no client (this library, a
psql session, a buggy script) can break them:
- ``refuse_change``: UPDATE, DELETE and TRUNCATE of the append-only tables
  are refused.
- ``check_balanced``: a deferred constraint trigger on entries; at commit
  every ledger transaction that got entries must sum to zero per currency.
  One check per ledger transaction is enough, so the trigger remembers the
  last transaction it verified in a transaction-local setting
  (``ledger.balanced``), and ``forget_balanced`` clears that memory whenever
  another entry is inserted: a later entry always causes a fresh check, even
  after ``SET CONSTRAINTS ALL IMMEDIATE``.
- ``check_has_entries``: a deferred constraint trigger on transactions; a
  ledger transaction without entries is refused at commit.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "ledger"
APPEND_ONLY = ("accounts", "transactions", "entries", "flags", "flag_events", "payout_exports", "export_items")

FUNCTIONS = r"""
CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only: % refused (corrections are reversal transactions)',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END $$;

CREATE FUNCTION ledger.forget_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('ledger.balanced', '', true);
    RETURN NULL;
END $$;

CREATE FUNCTION ledger.check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    IF coalesce(current_setting('ledger.balanced', true), '') = NEW.transaction_id::text THEN
        RETURN NULL;  -- verified since the last entry went in
    END IF;
    SELECT currency, sum(amount) AS total INTO bad
      FROM ledger.entries WHERE transaction_id = NEW.transaction_id
     GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: its % entries sum to %',
            NEW.transaction_id, bad.currency, bad.total USING ERRCODE = 'check_violation';
    END IF;
    PERFORM set_config('ledger.balanced', NEW.transaction_id::text, true);
    RETURN NULL;
END $$;

CREATE FUNCTION ledger.check_has_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledger.entries WHERE transaction_id = NEW.id) THEN
        RAISE EXCEPTION 'ledger transaction % has no entries', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""

TRIGGERS = r"""
CREATE TRIGGER forget_balanced AFTER INSERT ON ledger.entries
    FOR EACH ROW EXECUTE FUNCTION ledger.forget_balanced();
CREATE CONSTRAINT TRIGGER check_balanced AFTER INSERT ON ledger.entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger.check_balanced();
CREATE CONSTRAINT TRIGGER check_has_entries AFTER INSERT ON ledger.transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger.check_has_entries();
"""


def _append_only_triggers(table: str) -> str:
    return (
        f"CREATE TRIGGER refuse_change BEFORE UPDATE OR DELETE ON ledger.{table} "
        f"FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();\n"
        f"CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON ledger.{table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();\n"
    )


def _ts(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _create_account_tables() -> None:
    op.create_table(
        "federations",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        _ts(),
        sa.PrimaryKeyConstraint("name", name="pk_federations"),
        schema=SCHEMA,
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("federation", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(12), nullable=False),
        _ts(),
        sa.CheckConstraint("kind IN ('funding', 'pool', 'payable', 'held', 'paid_out')", name="ck_accounts_kind"),
        sa.CheckConstraint("(client_id = '') = (kind IN ('funding', 'pool'))", name="ck_accounts_owner"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("federation", "kind", "client_id", "currency",
                            name="uq_accounts_federation_kind_client_id_currency"),
        sa.UniqueConstraint("id", "currency", name="uq_accounts_id_currency"),
        schema=SCHEMA,
    )


def _create_transaction_tables() -> None:
    op.create_table(
        "transactions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("federation", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(), nullable=False),
        sa.Column("reverses_id", sa.BigInteger(), nullable=True),
        _ts(),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint(
            "kind IN ('funding', 'allocation', 'release', 'forfeit', 'payout', 'reversal', 'adjustment')",
            name="ck_transactions_kind"),
        sa.CheckConstraint("(kind = 'reversal') = (reverses_id IS NOT NULL)", name="ck_transactions_reversal_link"),
        sa.CheckConstraint("seq >= 1", name="ck_transactions_seq_positive"),
        sa.ForeignKeyConstraint(["reverses_id"], ["ledger.transactions.id"],
                                name="fk_transactions_reverses_id_transactions"),
        sa.PrimaryKeyConstraint("id", name="pk_transactions"),
        sa.UniqueConstraint("federation", "seq", name="uq_transactions_federation_seq"),
        sa.UniqueConstraint("federation", "idempotency_key", name="uq_transactions_federation_idempotency_key"),
        sa.UniqueConstraint("reverses_id", name="uq_transactions_reverses_id"),
        schema=SCHEMA,
    )
    op.create_index("ix_transactions_federation_kind", "transactions", ["federation", "kind"], schema=SCHEMA)


def _create_entry_table() -> None:
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(12), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name="ck_entries_amount_nonzero"),
        sa.ForeignKeyConstraint(["account_id", "currency"], ["ledger.accounts.id", "ledger.accounts.currency"],
                                name="fk_entries_account_id_currency_accounts"),
        sa.ForeignKeyConstraint(["transaction_id"], ["ledger.transactions.id"],
                                name="fk_entries_transaction_id_transactions"),
        sa.PrimaryKeyConstraint("id", name="pk_entries"),
        schema=SCHEMA,
    )
    op.create_index("ix_entries_transaction_id", "entries", ["transaction_id"], schema=SCHEMA)
    op.create_index("ix_entries_account_id", "entries", ["account_id"], schema=SCHEMA)


def _create_flag_tables() -> None:
    op.create_table(
        "flags",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("federation", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(64), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("q_value", sa.Float(), nullable=True),
        sa.Column("evidence", postgresql.JSONB(), nullable=False),
        _ts(),
        sa.PrimaryKeyConstraint("id", name="pk_flags"),
        sa.UniqueConstraint("federation", "period", "method", "client_id",
                            name="uq_flags_federation_period_method_client_id"),
        schema=SCHEMA,
    )
    op.create_index("ix_flags_federation_client_id", "flags", ["federation", "client_id"], schema=SCHEMA)


def _create_flag_event_table() -> None:
    op.create_table(
        "flag_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("flag_id", sa.BigInteger(), nullable=False),
        sa.Column("federation", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        _ts(),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("state IN ('open', 'confirmed', 'dismissed')", name="ck_flag_events_state"),
        sa.ForeignKeyConstraint(["flag_id"], ["ledger.flags.id"], name="fk_flag_events_flag_id_flags"),
        sa.PrimaryKeyConstraint("id", name="pk_flag_events"),
        sa.UniqueConstraint("federation", "seq", name="uq_flag_events_federation_seq"),
        schema=SCHEMA,
    )
    op.create_index("ix_flag_events_flag_id", "flag_events", ["flag_id"], schema=SCHEMA)


def _create_export_tables() -> None:
    op.create_table(
        "payout_exports",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("federation", sa.String(128), nullable=False),
        sa.Column("period", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(12), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("csv_sha256", sa.String(64), nullable=False),
        sa.Column("json_sha256", sa.String(64), nullable=False),
        _ts(),
        sa.ForeignKeyConstraint(["transaction_id"], ["ledger.transactions.id"],
                                name="fk_payout_exports_transaction_id_transactions"),
        sa.PrimaryKeyConstraint("id", name="pk_payout_exports"),
        sa.UniqueConstraint("federation", "period", "currency", name="uq_payout_exports_federation_period_currency"),
        sa.UniqueConstraint("transaction_id", name="uq_payout_exports_transaction_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "export_items",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("export_id", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["ledger.entries.id"], name="fk_export_items_entry_id_entries"),
        sa.ForeignKeyConstraint(["export_id"], ["ledger.payout_exports.id"],
                                name="fk_export_items_export_id_payout_exports"),
        sa.PrimaryKeyConstraint("entry_id", name="pk_export_items"),
        schema=SCHEMA,
    )
    op.create_index("ix_export_items_export_id", "export_items", ["export_id"], schema=SCHEMA)


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    _create_account_tables()
    _create_transaction_tables()
    _create_entry_table()
    _create_flag_tables()
    _create_flag_event_table()
    _create_export_tables()
    op.execute(FUNCTIONS)
    op.execute(TRIGGERS)
    op.execute("".join(_append_only_triggers(table) for table in APPEND_ONLY))


def downgrade() -> None:
    for table in reversed(("federations",) + APPEND_ONLY):
        op.execute(f"DROP TABLE IF EXISTS ledger.{table} CASCADE")
    for function in ("refuse_change", "forget_balanced", "check_balanced", "check_has_entries"):
        op.execute(f"DROP FUNCTION IF EXISTS ledger.{function}()")
