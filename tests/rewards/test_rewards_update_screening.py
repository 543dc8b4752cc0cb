"""Update screening inside a settlement: client slices of the period's rounds, read from the artifact store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import add_generation, ledger_balances, make_federation, settle, write_backdoor_round
from django.utils import timezone
from registry.errors import InvalidInput
from registry.services import round_register_from_folder
from rewards.selectors import flag_list

CLIENTS = ("c0", "c1", "c2", "c3", "c4", "c5")


@pytest.fixture
def federation_with_rounds(db, tiny_base, tmp_path):
    fed = make_federation(CLIENTS)
    rounds = []
    for number in (0, 1):
        folder = write_backdoor_round(tmp_path / f"round-{number}", base=tiny_base, federation=fed.slug,
                                      number=number, clients=CLIENTS, malicious={"c4", "c5"}, seed=number)
        rounds.append(round_register_from_folder(federation=fed, folder=folder)[0])
    return fed, rounds


def _now_period():
    now = timezone.now()
    return now - timedelta(hours=1), now + timedelta(hours=1)


def test_outlying_updates_are_flagged_with_their_rounds_and_held(federation_with_rounds):
    fed, rounds = federation_with_rounds
    start, end = _now_period()
    add_generation(fed, rounds[1], {c: 1 / 6 for c in CLIENTS}, at=start + timedelta(minutes=5))
    s = settle(fed, pool=600, start=start, end=end).settlement
    assert s.rounds_count == 2
    flags = flag_list(federation=fed)
    assert sorted(f.client_id for f in flags) == ["c4", "c5"]
    for flag in flags:
        assert flag.method == "update-robust-z/1" and flag.score >= 3
        assert sorted(r["round"] for r in flag.evidence["rounds"]) == [0, 1]
    balances = ledger_balances(fed)
    assert balances[("held", "c4")] == balances[("held", "c5")] == 100
    assert all(balances[("payable", c)] == 100 for c in ("c0", "c1", "c2", "c3"))
    table = {row["client_id"]: row for row in s.screening["update-robust-z/1"]["table"]}
    assert table["c0"]["median_z"] < 3 < table["c4"]["median_z"]


def test_screening_can_be_switched_off(federation_with_rounds):
    from rewards.rules import SettlementRules

    fed, rounds = federation_with_rounds
    start, end = _now_period()
    add_generation(fed, rounds[1], {c: 1 / 6 for c in CLIENTS}, at=start + timedelta(minutes=5))
    s = settle(fed, pool=600, start=start, end=end, rules=SettlementRules(screen_updates=False)).settlement
    assert (s.rounds_count, s.flags_count, s.held_amount) == (0, 0, 0)


def test_a_tampered_client_file_is_refused_and_nothing_is_settled(federation_with_rounds, settings):
    from pathlib import Path

    from rewards.models import Settlement

    fed, rounds = federation_with_rounds
    stored = Path(settings.STORAGES["artifacts"]["OPTIONS"]["location"]) / rounds[0].artifact_path
    weights = stored / "clients" / "c0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    start, end = _now_period()
    add_generation(fed, rounds[1], {c: 1 / 6 for c in CLIENTS}, at=start + timedelta(minutes=5))
    with pytest.raises(InvalidInput, match="SHA-256 does not match the manifest"):
        settle(fed, pool=600, start=start, end=end)
    assert not Settlement.objects.filter(federation=fed).exists() and ledger_balances(fed) == {}
