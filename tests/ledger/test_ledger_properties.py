"""Property tests on real Postgres under random workloads (hypothesis).

- balances always sum to zero per currency;
- reposting with the same key never changes balances;
- a reversal removes exactly the original's effect;
- any edit to a stored row (made behind the triggers' back) makes `verify` fail, and undoing it passes again;
- direct SQL UPDATE/DELETE on entries is refused by the database.
"""

import uuid
from collections import Counter
from datetime import timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger.errors import NotReversible
from ledger.journal import Leg, balances, post_transaction, reverse_transaction
from ledger.models import ACCOUNT_KINDS, FLAG_STATES, TRANSACTION_KINDS
from ledger.verify import verify

DB_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ACCOUNTS = [("funding", ""), ("pool", ""), ("payable", "alice"), ("held", "bob"), ("paid_out", "carol"),
            ("payable", "bob")]

transfers = st.lists(st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.integers(1, 10**12),
                               st.sampled_from(["EUR", "USD"])), min_size=1, max_size=4)
operations = st.lists(st.one_of(
    st.tuples(st.just("post"), transfers),
    st.tuples(st.just("retry"), st.integers(0, 50)),
    st.tuples(st.just("reverse"), st.integers(0, 50)),
), min_size=1, max_size=10)


def _legs(spec) -> list[Leg]:
    legs = []
    for source, destination, amount, currency in spec:
        if source != destination:
            legs += [Leg(*source, -amount, currency), Leg(*destination, amount, currency)]
    return legs


def _balances(session, federation) -> Counter:
    return Counter({(b.kind, b.client_id, b.currency): b.balance for b in balances(session, federation)})


def _effect(legs) -> Counter:
    effect: Counter = Counter()
    for leg in legs:
        effect[leg.account] += leg.amount
    return effect


def _same(a: Counter, b: Counter) -> bool:
    return {k: v for k, v in a.items() if v} == {k: v for k, v in b.items() if v}


@DB_SETTINGS
@given(operations)
def test_random_workloads_keep_every_invariant(session, ops):
    federation = f"prop-{uuid.uuid4().hex[:10]}"
    posted: list[tuple[str, list[Leg], int]] = []  # (key, legs, transaction id)
    reversed_ids: set[int] = set()
    for op, arg in ops:
        if op == "post" and _legs(arg):
            key = f"k{len(posted)}"
            receipt = post_transaction(session, federation=federation, kind="adjustment", idempotency_key=key,
                                       legs=_legs(arg))
            posted.append((key, _legs(arg), receipt.id))
        elif op == "retry" and posted:
            key, legs, txn_id = posted[arg % len(posted)]
            before = _balances(session, federation)
            again = post_transaction(session, federation=federation, kind="adjustment", idempotency_key=key, legs=legs)
            assert again.replayed and again.id == txn_id
            assert _balances(session, federation) == before
        elif op == "reverse" and posted:
            _reverse_and_check(session, federation, posted[arg % len(posted)], reversed_ids)
        _assert_zero_sum(session, federation)
    session.commit()
    assert verify(session, federation).ok


def _reverse_and_check(session, federation, original, reversed_ids) -> None:
    _, legs, txn_id = original
    before = _balances(session, federation)
    if txn_id in reversed_ids:
        with pytest.raises(NotReversible):
            reverse_transaction(session, federation=federation, transaction_id=txn_id, idempotency_key="fresh")
        return
    reverse_transaction(session, federation=federation, transaction_id=txn_id)
    reversed_ids.add(txn_id)
    expected = before.copy()
    expected.subtract(_effect(legs))
    assert _same(_balances(session, federation), expected)


def _assert_zero_sum(session, federation) -> None:
    per_currency: Counter = Counter()
    for b in balances(session, federation):
        per_currency[b.currency] += b.balance
    assert all(total == 0 for total in per_currency.values())


# --- tampering -------------------------------------------------------------------------------------

# (table, column, how to change it); every stored column of every ledger table the chain covers
TAMPERABLE = [
    ("federations", "head_seq", "int"), ("federations", "head_hash", "hex"),
    ("accounts", "federation", "text"), ("accounts", "kind", "account_kind"), ("accounts", "client_id", "text"),
    ("accounts", "currency", "currency"), ("accounts", "id", "int"),
    ("transactions", "id", "int"), ("transactions", "federation", "text"), ("transactions", "seq", "int"),
    ("transactions", "kind", "transaction_kind"), ("transactions", "idempotency_key", "text"),
    ("transactions", "request_hash", "hex"), ("transactions", "description", "text"),
    ("transactions", "metadata", "json"), ("transactions", "reverses_id", "int"),
    ("transactions", "created_at", "time"), ("transactions", "prev_hash", "hex"), ("transactions", "hash", "hex"),
    ("entries", "id", "int"), ("entries", "transaction_id", "int"), ("entries", "account_id", "int"),
    ("entries", "currency", "currency"), ("entries", "amount", "int"),
    ("flags", "id", "int"), ("flags", "federation", "text"), ("flags", "client_id", "text"),
    ("flags", "period", "text"), ("flags", "method", "text"), ("flags", "score", "float"),
    ("flags", "p_value", "float"), ("flags", "q_value", "float"), ("flags", "evidence", "json"),
    ("flags", "created_at", "time"),
    ("flag_events", "flag_id", "int"), ("flag_events", "federation", "text"), ("flag_events", "seq", "int"),
    ("flag_events", "state", "flag_state"), ("flag_events", "actor", "text"), ("flag_events", "note", "text"),
    ("flag_events", "created_at", "time"), ("flag_events", "prev_hash", "hex"), ("flag_events", "hash", "hex"),
    ("payout_exports", "federation", "text"), ("payout_exports", "period", "text"),
    ("payout_exports", "currency", "currency"), ("payout_exports", "transaction_id", "int"),
    ("payout_exports", "csv_sha256", "hex"), ("payout_exports", "json_sha256", "hex"),
    ("export_items", "entry_id", "int"), ("export_items", "export_id", "int"), ("export_items", "client_id", "text"),
]

ROWS = {  # the rows of one federation, by primary key
    "federations": ("name", "SELECT name FROM ledger.federations WHERE name = %(f)s"),
    "accounts": ("id", "SELECT id FROM ledger.accounts a WHERE federation = %(f)s "
                       "AND EXISTS (SELECT 1 FROM ledger.entries e WHERE e.account_id = a.id)"),
    "transactions": ("id", "SELECT id FROM ledger.transactions WHERE federation = %(f)s"),
    "entries": ("id", "SELECT e.id FROM ledger.entries e JOIN ledger.transactions t ON t.id = e.transaction_id "
                      "WHERE t.federation = %(f)s"),
    "flags": ("id", "SELECT id FROM ledger.flags WHERE federation = %(f)s"),
    "flag_events": ("id", "SELECT id FROM ledger.flag_events WHERE federation = %(f)s"),
    "payout_exports": ("id", "SELECT id FROM ledger.payout_exports WHERE federation = %(f)s"),
    "export_items": ("entry_id", "SELECT i.entry_id FROM ledger.export_items i JOIN ledger.payout_exports x "
                                 "ON x.id = i.export_id WHERE x.federation = %(f)s"),
}

CHOICES = {"account_kind": ACCOUNT_KINDS, "transaction_kind": TRANSACTION_KINDS, "flag_state": FLAG_STATES}


def _changed(kind: str, value, salt: int):
    if kind in CHOICES:
        return next(v for v in CHOICES[kind][salt % len(CHOICES[kind]):] + CHOICES[kind] if v != value)
    if kind == "int":
        return (value or 0) + 10**9 + salt
    if kind == "float":
        return (value or 0.0) * 1.5 + 0.25
    if kind == "time":
        return value + timedelta(microseconds=1 + salt)
    if kind == "json":
        return psycopg.types.json.Jsonb({**value, "tampered": salt})
    if kind == "currency":
        return "XTS" if value != "XTS" else "XAU"
    if kind == "hex":
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    return value[:-1] + ("x" if value[-1:] != "x" else "y")


def _tamper(raw, table: str, column: str, key, new) -> bool:
    """Change one cell with the triggers off; False if the database's constraints refuse the value."""
    pk = ROWS[table][0]
    try:
        raw.execute("SET LOCAL session_replication_role = replica")
        raw.execute(f"UPDATE ledger.{table} SET {column} = %s WHERE {pk} = %s", (new, key))
        raw.commit()
        return True
    except (psycopg.errors.IntegrityError, psycopg.errors.CheckViolation):
        raw.rollback()
        return False


@pytest.fixture
def tamper_federation(session, populate):
    federation = f"tamper-{uuid.uuid4().hex[:10]}"
    populate(session, federation)
    assert verify(session, federation).ok
    return federation


@pytest.mark.parametrize("target", TAMPERABLE, ids=lambda t: f"{t[0]}.{t[1]}")
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 1000), st.integers(0, 7))
def test_any_edit_to_a_stored_row_makes_verify_fail(session, raw, tamper_federation, target, row_pick, salt):
    table, column, kind = target
    pk = ROWS[table][0]
    keys = [r[0] for r in raw.execute(ROWS[table][1], {"f": tamper_federation}).fetchall()]
    cells = sorted(raw.execute(f"SELECT {pk}, {column} FROM ledger.{table} WHERE {pk} = ANY(%s) "
                               f"AND {column} IS NOT NULL", (keys,)).fetchall())
    raw.rollback()
    assert cells, f"populate() left no {table}.{column} to edit"
    key, old = cells[row_pick % len(cells)]
    new = _changed(kind, old, salt)
    assume(_tamper(raw, table, column, key, new))
    new_key = new if column == pk else key
    try:
        session.expire_all()
        assert not verify(session, tamper_federation).ok, f"editing {table}.{column} went unnoticed"
        session.rollback()
    finally:
        restored = psycopg.types.json.Jsonb(old) if kind == "json" else old
        assert _tamper(raw, table, column, new_key, restored)
    session.expire_all()
    assert verify(session, tamper_federation).ok


ENTRY_EDITS = st.sampled_from([
    "UPDATE ledger.entries SET amount = amount + 1 WHERE id = %s",
    "UPDATE ledger.entries SET account_id = account_id WHERE id = %s",
    "UPDATE ledger.entries SET currency = 'USD' WHERE id = %s",
    "DELETE FROM ledger.entries WHERE id = %s",
])


@DB_SETTINGS
@given(ENTRY_EDITS, st.integers(0, 100))
def test_direct_sql_update_or_delete_on_entries_is_refused(session, raw, tamper_federation, statement, pick):
    ids = sorted(r[0] for r in raw.execute(ROWS["entries"][1], {"f": tamper_federation}).fetchall())
    with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
        raw.execute(statement, (ids[pick % len(ids)],))
    raw.rollback()
