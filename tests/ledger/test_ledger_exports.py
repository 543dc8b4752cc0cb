"""Payout exports: byte-identical re-exports, nothing paid twice, flagged clients skipped, hashes recorded."""

import csv
import io
import json

import psycopg
import pytest

from ledger import export_payouts, fund_pool, post_allocation, record_findings, review_flag, verify
from ledger.canonical import sha256_hex
from ledger.errors import InvalidInput, NothingToExport, NotReversible
from ledger.journal import balances, reverse_transaction
from ledger.models import PayoutExport
from ledger.screening import Finding


def _allocate(session, federation, period, contributions, pool=900):
    fund_pool(session, federation=federation, amount=pool, currency="EUR", idempotency_key=f"fund-{period}")
    return post_allocation(session, federation=federation, period=period, currency="EUR", pool_amount=pool,
                           contributions=contributions)


def _export(session, federation, period):
    return export_payouts(session, federation=federation, period=period, currency="EUR")


def _csv_rows(files):
    return list(csv.DictReader(io.StringIO(files.csv.decode())))


def test_it_exports_csv_and_json_and_records_their_hashes(session, federation, tmp_path):
    allocation = _allocate(session, federation, "2025-06", {"alice": 2, "bob": 1})
    files = _export(session, federation, "2025-06")
    session.commit()
    rows = _csv_rows(files)
    assert [(r["client_id"], int(r["amount"]), r["currency"]) for r in rows] == [("alice", 600, "EUR"),
                                                                                 ("bob", 300, "EUR")]
    assert all(r["source_transactions"] == str(allocation.receipt.seq) for r in rows)
    assert rows[0]["payout_reference"].startswith("PT-")
    document = json.loads(files.json)
    assert document["total"] == 900 and document["format"] == "protoken-payout/1"
    assert document["lines"][1]["source_transactions"] == [allocation.receipt.seq]
    stored = session.query(PayoutExport).filter_by(federation=federation).one()
    assert (stored.csv_sha256, stored.json_sha256) == (sha256_hex(files.csv), sha256_hex(files.json))
    csv_path, json_path = files.write(tmp_path)
    assert sha256_hex(csv_path.read_bytes()) == stored.csv_sha256 and json_path.read_bytes() == files.json
    paid = {b.client_id: b.balance for b in balances(session, federation) if b.kind == "paid_out"}
    assert paid == {"alice": 600, "bob": 300}
    assert verify(session, federation).ok


def test_exporting_the_same_period_twice_yields_byte_identical_files(session, federation):
    _allocate(session, federation, "2025-06", {"alice": 1, "bob": 1, "carol": 1})
    first = _export(session, federation, "2025-06")
    session.commit()
    second = _export(session, federation, "2025-06")
    assert second.replayed and not first.replayed
    assert (second.csv, second.json) == (first.csv, first.json)
    assert sum(b.balance for b in balances(session, federation) if b.kind == "paid_out") == 900


def test_nothing_is_paid_twice_across_periods(session, federation):
    june = _allocate(session, federation, "2025-06", {"alice": 1, "bob": 2})
    _export(session, federation, "2025-06")
    july = _allocate(session, federation, "2025-07", {"alice": 1}, pool=50)
    files = _export(session, federation, "2025-07")
    assert [(line.client_id, line.amount, line.source_seqs) for line in files.lines] == [
        ("alice", 50, (july.receipt.seq,))]
    assert june.receipt.seq < july.receipt.seq
    with pytest.raises(NothingToExport):
        _export(session, federation, "2025-08")


def test_the_database_refuses_to_export_an_entry_twice(session, federation, raw):
    _allocate(session, federation, "2025-06", {"alice": 1})
    _export(session, federation, "2025-06")
    session.commit()
    item = raw.execute("SELECT i.entry_id, i.export_id FROM ledger.export_items i JOIN ledger.payout_exports x "
                       "ON x.id = i.export_id WHERE x.federation = %s", (federation,)).fetchone()
    with pytest.raises(psycopg.errors.UniqueViolation):
        raw.execute("INSERT INTO ledger.export_items (entry_id, export_id, client_id) VALUES (%s, %s, 'alice')",
                    item)


def test_it_skips_flagged_clients_until_their_hold_is_released(session, federation):
    [flag] = record_findings(session, federation=federation, period="2025-06",
                             findings=[Finding("bob", "evidence-binomial-bh/1", 9.0, 1e-9, 1e-8, {})])
    _allocate(session, federation, "2025-06", {"alice": 2, "bob": 1})
    june = _export(session, federation, "2025-06")
    assert [line.client_id for line in june.lines] == ["alice"]
    review = review_flag(session, federation=federation, flag_id=flag.id, state="dismissed", actor="auditor")
    july = _export(session, federation, "2025-07")
    assert [(line.client_id, line.amount) for line in july.lines] == [("bob", 300)]
    assert july.lines[0].source_seqs == (review.released[0].seq,)


def test_a_clawback_after_export_nets_against_the_next_payout(session, federation):
    june = _allocate(session, federation, "2025-06", {"alice": 1})
    payout = _export(session, federation, "2025-06")
    reversal = reverse_transaction(session, federation=federation, transaction_id=june.receipt.id, reason="fraud")
    with pytest.raises(NothingToExport):
        _export(session, federation, "2025-07")  # alice owes 900: nothing to pay
    _allocate(session, federation, "2025-07", {"alice": 1}, pool=1000)
    august = _export(session, federation, "2025-08")
    assert [(x.client_id, x.amount) for x in august.lines] == [("alice", 100)]
    assert reversal.seq in august.lines[0].source_seqs
    payout_txn = session.query(PayoutExport).filter_by(federation=federation, period="2025-06").one().transaction_id
    with pytest.raises(NotReversible, match="payout"):
        reverse_transaction(session, federation=federation, transaction_id=payout_txn)
    assert payout.total == 900


def test_it_refuses_bad_export_arguments(session, federation):
    with pytest.raises(InvalidInput, match="invalid period"):
        export_payouts(session, federation=federation, period="June 2025", currency="EUR")
    with pytest.raises(InvalidInput, match="invalid currency"):
        export_payouts(session, federation=federation, period="2025-06", currency="€")
