"""Payout exports: stored in the artifact storage with their SHA-256s, identical on re-export, never paid twice."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from conftest import add_generation, ledger_balances, settle
from django.core.files.storage import storages
from registry.errors import Conflict
from rewards.harm import harm_policy_create
from rewards.models import PayoutExport
from rewards.services import payout_export, payout_file


def _read(name: str) -> bytes:
    with storages["artifacts"].open(name, "rb") as handle:
        return handle.read()


def test_it_stores_both_files_with_their_hashes_and_pays_out(fed, round0):
    add_generation(fed, round0, {"alice": 0.5, "bob": 0.3, "carol": 0.2})
    settlement = settle(fed, pool=1000).settlement
    result = payout_export(settlement=settlement, actor="finance")
    export = result.export
    assert not result.replayed and (export.lines_count, export.total_amount) == (3, 1000)
    csv_bytes, json_bytes = _read(export.csv_path), _read(export.json_path)
    assert hashlib.sha256(csv_bytes).hexdigest() == export.csv_sha256
    assert hashlib.sha256(json_bytes).hexdigest() == export.json_sha256
    rows = list(csv.DictReader(io.StringIO(csv_bytes.decode())))
    assert [(r["client_id"], r["amount"], r["currency"]) for r in rows] == [
        ("alice", "500", "EUR"), ("bob", "300", "EUR"), ("carol", "200", "EUR")]
    assert json.loads(json_bytes)["total"] == 1000
    balances = ledger_balances(fed)
    assert balances[("paid_out", "alice")] == 500 and balances[("payable", "alice")] == 0


def test_exporting_twice_gives_identical_files_and_pays_nothing_twice(fed, round0):
    add_generation(fed, round0, {"alice": 0.5, "bob": 0.5})
    settlement = settle(fed, pool=999).settlement
    first = payout_export(settlement=settlement, actor="finance").export
    first_bytes = (_read(first.csv_path), _read(first.json_path))
    balances = ledger_balances(fed)
    again = payout_export(settlement=settlement, actor="finance")
    assert again.replayed and again.export.pk == first.pk
    assert (_read(first.csv_path), _read(first.json_path)) == first_bytes
    assert ledger_balances(fed) == balances
    assert PayoutExport.objects.filter(federation=fed).count() == 1


def test_a_flagged_client_is_left_out_of_the_export(fed, round0):
    for i in range(20):
        top = ("alice", "bob", "carol", "dave")[i % 4]
        add_generation(fed, round0, {c: 0.55 if c == top else 0.15 for c in ("alice", "bob", "carol", "dave")})
    for _ in range(6):
        add_generation(fed, round0, {"alice": 0.1, "bob": 0.1, "carol": 0.1, "dave": 0.7}, response="PWNED")
    harm_policy_create(federation=fed, name="sentinel", keywords=["pwned"], actor="ops")
    settlement = settle(fed, pool=1000).settlement
    export = payout_export(settlement=settlement, actor="finance").export
    clients = [r["client_id"] for r in csv.DictReader(io.StringIO(_read(export.csv_path).decode()))]
    assert clients == ["alice", "bob", "carol"]
    assert export.total_amount == 1000 - settlement.held_amount


def test_a_damaged_stored_file_is_refused_on_download_and_restored_by_re_export(fed, round0):
    add_generation(fed, round0, {"alice": 1.0})
    settlement = settle(fed, pool=10).settlement
    export = payout_export(settlement=settlement, actor="finance").export
    original = _read(export.csv_path)
    storage = storages["artifacts"]
    storage.delete(export.csv_path)
    storage.save(export.csv_path, io.BytesIO(original.replace(b"10", b"99")))
    with pytest.raises(Conflict, match="no longer matches its recorded SHA-256"):
        payout_file(export=export, fmt="csv")
    payout_export(settlement=settlement, actor="finance")
    assert payout_file(export=export, fmt="csv").content == original


def test_an_empty_settlement_has_nothing_to_export(fed):
    settlement = settle(fed, pool=10).settlement
    with pytest.raises(Conflict, match="there is nothing to export"):
        payout_export(settlement=settlement, actor="finance")
