"""Ledger core: accounts, balanced immutable transactions, flags, exports.

Revision ID: 0001
Revises:
Create Date: 2026-12-03 19:44:16.483274
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

IMMUTABLE_TABLES = ("transactions", "entries", "flags", "flag_events", "exports")

# The accounting rules, enforced by Postgres so that no client (this library, a
# psql session, a buggy migration) can break them.
TRIGGERS = r"""
CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only: % refused (corrections are reversals)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE FUNCTION ledger.guard_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger.accounts: DELETE refused' USING ERRCODE = 'restrict_violation';
    END IF;
    IF (NEW.id, NEW.federation, NEW.kind, NEW.client_id, NEW.currency, NEW.allow_negative, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.federation, OLD.kind, OLD.client_id, OLD.currency, OLD.allow_negative, OLD.created_at) THEN
        RAISE EXCEPTION 'ledger.accounts: only the balance changes, and only by posting entries'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.balance IS DISTINCT FROM OLD.balance
       AND coalesce(current_setting('ledger.posting', true), '') <> 'on' THEN
        RAISE EXCEPTION 'ledger.accounts: balances change only by posting entries'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

-- Entries join only a ledger transaction written by the same database
-- transaction, and move their account's balance as they go in.
CREATE FUNCTION ledger.apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    xact bigint;
BEGIN
    SELECT db_xact INTO xact FROM ledger.transactions WHERE id = NEW.transaction_id;
    IF xact IS DISTINCT FROM (pg_current_xact_id()::text)::bigint THEN
        RAISE EXCEPTION 'ledger transaction % is already committed: entries cannot be added to it',
            NEW.transaction_id USING ERRCODE = 'restrict_violation';
    END IF;
    PERFORM set_config('ledger.posting', 'on', true);
    UPDATE ledger.accounts SET balance = balance + NEW.amount WHERE id = NEW.account_id;
    PERFORM set_config('ledger.posting', 'off', true);
    RETURN NEW;
END $$;

-- Deferred to commit. One check per ledger transaction covers every entry
-- inserted so far, so later rows of the same transaction (higher ids) that
-- were already summed skip the query.
CREATE FUNCTION ledger.check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    marker text := coalesce(current_setting('ledger.balanced', true), '');
    bad record;
    seen bigint;
BEGIN
    IF marker <> '' AND split_part(marker, ':', 1)::bigint = NEW.transaction_id
       AND NEW.id <= split_part(marker, ':', 2)::bigint THEN
        RETURN NULL;
    END IF;
    SELECT currency, sum(amount) AS total INTO bad FROM ledger.entries
        WHERE transaction_id = NEW.transaction_id GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: its % entries sum to %',
            NEW.transaction_id, bad.currency, bad.total USING ERRCODE = 'check_violation';
    END IF;
    SELECT max(id) INTO seen FROM ledger.entries WHERE transaction_id = NEW.transaction_id;
    PERFORM set_config('ledger.balanced', NEW.transaction_id || ':' || seen, true);
    RETURN NULL;
END $$;

CREATE FUNCTION ledger.check_has_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM ledger.entries WHERE transaction_id = NEW.id) < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has fewer than two entries', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER guard BEFORE UPDATE OR DELETE ON ledger.accounts
    FOR EACH ROW EXECUTE FUNCTION ledger.guard_account();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON ledger.accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER apply_entry BEFORE INSERT ON ledger.entries
    FOR EACH ROW EXECUTE FUNCTION ledger.apply_entry();
CREATE CONSTRAINT TRIGGER balanced AFTER INSERT ON ledger.entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger.check_balanced();
CREATE CONSTRAINT TRIGGER has_entries AFTER INSERT ON ledger.transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger.check_has_entries();
""" + "".join(
    f"""
CREATE TRIGGER immutable BEFORE UPDATE OR DELETE ON ledger.{t}
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON ledger.{t}
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
"""
    for t in IMMUTABLE_TABLES
)

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS ledger.refuse_change(), ledger.guard_account(), ledger.apply_entry(),
    ledger.check_balanced(), ledger.check_has_entries();
"""


def upgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("federation", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("allow_negative", sa.Boolean(), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(client_id = '') = (kind IN ('funding', 'pool'))", name=op.f("ck_accounts_client_matches_kind")
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_accounts_currency")),
        sa.CheckConstraint(
            "kind IN ('funding', 'pool', 'payable', 'held', 'paid_out')", name=op.f("ck_accounts_kind")
        ),
        sa.CheckConstraint("allow_negative OR balance >= 0", name=op.f("ck_accounts_no_overdraft")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint(
            "federation",
            "kind",
            "client_id",
            "currency",
            name=op.f("uq_accounts_federation_kind_client_id_currency"),
        ),
        sa.UniqueConstraint("id", "currency", name=op.f("uq_accounts_id_currency")),
        schema="ledger",
    )
    op.create_table(
        "chains",
        sa.Column("federation", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("federation", name=op.f("pk_chains")),
        schema="ledger",
    )
    op.create_table(
        "flags",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("federation", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("evidence_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flags")),
        sa.UniqueConstraint(
            "federation",
            "method",
            "client_id",
            "period",
            name=op.f("uq_flags_federation_method_client_id_period"),
        ),
        schema="ledger",
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("federation", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("reverses_id", sa.BigInteger(), nullable=True),
        sa.Column("period", sa.Text(), nullable=True),
        sa.Column("memo", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column(
            "db_xact",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
            nullable=False,
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_transactions_seq")),
        sa.ForeignKeyConstraint(
            ["reverses_id"], ["ledger.transactions.id"], name=op.f("fk_transactions_reverses_id_transactions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.UniqueConstraint(
            "federation", "idempotency_key", name=op.f("uq_transactions_federation_idempotency_key")
        ),
        sa.UniqueConstraint("federation", "seq", name=op.f("uq_transactions_federation_seq")),
        sa.UniqueConstraint("reverses_id", name=op.f("uq_transactions_reverses_id")),
        schema="ledger",
    )
    op.create_index(
        op.f("ix_transactions_federation_kind_period"),
        "transactions",
        ["federation", "kind", "period"],
        unique=False,
        schema="ledger",
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_entries_nonzero")),
        sa.ForeignKeyConstraint(
            ["account_id", "currency"],
            ["ledger.accounts.id", "ledger.accounts.currency"],
            name=op.f("fk_entries_account_id_currency_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger.transactions.id"],
            name=op.f("fk_entries_transaction_id_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
        schema="ledger",
    )
    op.create_index(
        op.f("ix_entries_account_id_transaction_id"),
        "entries",
        ["account_id", "transaction_id"],
        unique=False,
        schema="ledger",
    )
    op.create_index(
        op.f("ix_entries_transaction_id"), "entries", ["transaction_id"], unique=False, schema="ledger"
    )
    op.create_table(
        "exports",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("federation", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("csv_sha256", sa.String(length=64), nullable=False),
        sa.Column("json_sha256", sa.String(length=64), nullable=False),
        sa.Column("csv", sa.LargeBinary(), nullable=False),
        sa.Column("json", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger.transactions.id"],
            name=op.f("fk_exports_transaction_id_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
        sa.UniqueConstraint(
            "federation", "period", "currency", name=op.f("uq_exports_federation_period_currency")
        ),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_exports_transaction_id")),
        schema="ledger",
    )
    op.create_table(
        "flag_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("flag_id", sa.BigInteger(), nullable=False),
        sa.Column("federation", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'confirmed', 'dismissed')", name=op.f("ck_flag_events_status")
        ),
        sa.ForeignKeyConstraint(["flag_id"], ["ledger.flags.id"], name=op.f("fk_flag_events_flag_id_flags")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flag_events")),
        sa.UniqueConstraint("federation", "seq", name=op.f("uq_flag_events_federation_seq")),
        schema="ledger",
    )
    op.create_index(op.f("ix_flag_events_flag_id"), "flag_events", ["flag_id"], unique=False, schema="ledger")
    # ### end Alembic commands ###
    op.execute(TRIGGERS)


def downgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_index(op.f("ix_flag_events_flag_id"), table_name="flag_events", schema="ledger")
    op.drop_table("flag_events", schema="ledger")
    op.drop_table("exports", schema="ledger")
    op.drop_index(op.f("ix_entries_transaction_id"), table_name="entries", schema="ledger")
    op.drop_index(op.f("ix_entries_account_id_transaction_id"), table_name="entries", schema="ledger")
    op.drop_table("entries", schema="ledger")
    op.drop_index(op.f("ix_transactions_federation_kind_period"), table_name="transactions", schema="ledger")
    op.drop_table("transactions", schema="ledger")
    op.drop_table("flags", schema="ledger")
    op.drop_table("chains", schema="ledger")
    op.drop_table("accounts", schema="ledger")
    # ### end Alembic commands ###
    op.execute(DROP_FUNCTIONS)
