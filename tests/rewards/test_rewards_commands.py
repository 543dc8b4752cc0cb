"""`settle_period`, `review_flag` and `export_payouts` drive the same services as the API."""

from __future__ import annotations

import hashlib
import io

from conftest import add_generation, ledger_balances
from django.core.management import call_command
from rewards.harm import harm_policy_create
from rewards.selectors import flag_list

PERIOD = ["--start", "2026-01-05", "--end", "2026-01-06", "--currency", "EUR"]


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_settle_review_and_export_from_the_command_line(fed, round0, tmp_path):
    for i in range(20):
        top = ("alice", "bob", "carol", "dave")[i % 4]
        add_generation(fed, round0, {c: 0.55 if c == top else 0.15 for c in ("alice", "bob", "carol", "dave")})
    for _ in range(6):
        add_generation(fed, round0, {"alice": 0.1, "bob": 0.1, "carol": 0.1, "dave": 0.7}, response="PWNED")
    harm_policy_create(federation=fed, name="sentinel", keywords=["pwned"], actor="ops")

    settled = _run("settle_period", "--federation", fed.slug, "--pool", "1000", *PERIOD, "--rules",
                   '{"minimum_payout": 1}')
    assert ": settled (settlement" in settled and "allocated 1000 of 1000" in settled and "1 flags" in settled
    assert "already settled" in _run("settle_period", "--federation", fed.slug, "--pool", "1000", *PERIOD,
                                     "--rules", '{"minimum_payout": 1}')

    listing = _run("review_flag", "--federation", fed.slug, "--list", "--state", "open")
    (flag,) = flag_list(federation=fed)
    assert listing.startswith(f"{flag.id}\topen\tdave") and "1 flags" in listing
    confirmed = _run("review_flag", "--federation", fed.slug, "--flag", str(flag.id), "--state", "confirmed")
    assert "open -> confirmed" in confirmed
    dismissed = _run("review_flag", "--federation", fed.slug, "--flag", str(flag.id), "--state", "dismissed",
                     "--note", "appeal accepted")
    assert "confirmed -> dismissed; released held payouts" in dismissed
    assert ledger_balances(fed)[("held", "dave")] == 0

    exported = _run("export_payouts", "--federation", fed.slug, *PERIOD, "--out", str(tmp_path / "out"))
    assert "exported (export" in exported and "4 payees, total 1000" in exported
    csv_file = next((tmp_path / "out").glob("*.csv"))
    assert hashlib.sha256(csv_file.read_bytes()).hexdigest() in exported
    again = _run("export_payouts", "--federation", fed.slug, *PERIOD)
    assert "already exported; identical files" in again
    assert ledger_balances(fed)[("paid_out", "dave")] > 0
