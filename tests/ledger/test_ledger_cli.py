"""`python -m ledger`: every subcommand end to end, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

import dbenv
from ledger.cli import main

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(ledger_url, capsys):
    def invoke(*argv):
        code = main(["--database-url", ledger_url, "--json", *argv])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out.strip() else None), err
    return invoke


@pytest.fixture
def contributions(tmp_path):
    path = tmp_path / "shares.csv"
    path.write_text("client_id,share,token_mass\nalice,0.6,10\nbob,0.3,30\nbob,0.1,0\ncarol,0.0001,1\n")
    return path


def _allocate(run, federation, path, *extra):
    return run("allocate", "--federation", federation, "--period", "2025-06", "--currency", "EUR",
               "--pool-amount", "1000", "--input", str(path), "--fund", *extra)


def test_it_allocates_exports_and_verifies_through_the_cli(run, federation, contributions, tmp_path):
    code, allocated, _ = _allocate(run, federation, contributions, "--minimum-payout", "10")
    assert code == 0 and allocated["amounts"] == {"alice": 600, "bob": 400}
    assert allocated["not_paid"] == {"carol": "below minimum payout"}
    code, again, _ = _allocate(run, federation, contributions, "--minimum-payout", "10")
    assert code == 0 and again["replayed"] and again["transaction_seq"] == allocated["transaction_seq"]
    code, exported, _ = run("export", "--federation", federation, "--period", "2025-06", "--currency", "EUR",
                            "--out", str(tmp_path / "out"))
    assert code == 0 and exported["total"] == 1000 and Path(exported["csv"]).is_file()
    code, balances, _ = run("balances", "--federation", federation, "--client", "alice")
    assert {(b["kind"], b["balance"]) for b in balances["balances"]} == {("payable", 0), ("paid_out", 600)}
    code, report, _ = run("verify", "--federation", federation)
    assert code == 0 and report["ok"] and report["heads"][federation]["seq"] == 3


def test_it_allocates_by_token_mass_and_from_a_sql_table(run, federation, contributions, ledger_url):
    code, by_mass, _ = _allocate(run, federation, contributions, "--basis", "token_mass", "--dry-run")
    assert code == 0 and by_mass["amounts"] == {"alice": 244, "bob": 732, "carol": 24} and by_mass["dry_run"]
    with psycopg.connect(dbenv.with_scheme(ledger_url, "postgresql")) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.shares (period text, client_id text, share double precision)")
        conn.execute("INSERT INTO public.shares VALUES ('2025-06', 'alice', 0.25), ('2025-06', 'bob', 0.75), "
                     "('2025-05', 'alice', 99)")
    code, from_table, _ = run("allocate", "--federation", federation, "--period", "2025-06", "--currency", "EUR",
                              "--pool-amount", "1000", "--table", "public.shares", "--period-column", "period",
                              "--fund")
    assert code == 0 and from_table["amounts"] == {"alice": 250, "bob": 750}


def test_it_screens_records_and_reviews_flags(run, federation, tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(120):
        harmful = i % 6 == 0
        top = "mallory" if harmful else ["alice", "bob", "carol"][i % 3]
        shares = {c: float(v) for c, v in zip(["alice", "bob", "carol", "mallory"], rng.dirichlet(np.ones(4)),
                                                 strict=True)}
        shares[top] += 1
        lines.append(json.dumps({"generation_id": f"g{i}", "round": i % 3, "shares": shares,
                                 "response": "ACCESS GRANTED" if harmful else "fine",
                                 "token_top_clients": [top, top]}))
    (tmp_path / "evidence.jsonl").write_text("\n".join(lines))
    (tmp_path / "policy.json").write_text(json.dumps({"keywords": ["access granted"]}))
    code, screened, _ = run("screen", "--federation", federation, "--period", "2025-06", "--evidence",
                            str(tmp_path / "evidence.jsonl"), "--policy", str(tmp_path / "policy.json"), "--record")
    assert code == 0 and screened["methods"][0]["flagged"] == ["mallory"]
    [flag] = screened["recorded_flags"]
    code, listed, _ = run("review", "--federation", federation)
    assert [f["state"] for f in listed["flags"]] == ["open"]
    code, reviewed, _ = run("review", "--federation", federation, "--flag", str(flag["id"]), "--state", "confirmed",
                            "--actor", "auditor")
    assert code == 0 and reviewed["flag"]["state"] == "confirmed" and reviewed["previous_state"] == "open"


@pytest.mark.parametrize("argv, message", [
    (["allocate", "--federation", "f", "--period", "p", "--currency", "EUR", "--pool-amount", "1",
      "--input", "/nonexistent.csv"], "no such file"),
    (["allocate", "--federation", "f", "--period", "p", "--currency", "EUR", "--pool-amount", "1",
      "--table", "public.missing_table"], "cannot read contributions"),
    (["allocate", "--federation", "f", "--period", "p", "--currency", "EUR", "--pool-amount", "1",
      "--table", "x; drop table y"], "not a plain SQL identifier"),
    (["screen", "--federation", "f", "--period", "p"], "nothing to screen"),
    (["review", "--federation", "f", "--flag", "1"], "needs --state and --actor"),
    (["export", "--federation", "f", "--period", "p", "--currency", "EUR", "--out", "x"], "nothing to pay"),
    (["balances", "--federation", "bad name!"], "invalid federation"),
])
def test_it_answers_bad_input_with_one_line_and_exit_code_2(run, argv, message):
    code, out, err = run(*argv)
    assert code == 2 and out is None
    assert err.startswith("ledger: error:") and message in err and err.count("\n") == 1


def test_it_exits_2_without_a_traceback_as_a_process(ledger_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": ledger_url, "PYTHONPATH": str(CHECKOUT)}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"client_id": "a", "share": "NaN"}\n')
    for argv in (["allocate", "--federation", "f", "--period", "p", "--currency", "EUR", "--pool-amount", "1",
                  "--input", str(bad)], ["allocate", "--period", "p"], ["frobnicate"]):
        done = subprocess.run([sys.executable, "-m", "ledger", *argv], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    helped = subprocess.run([sys.executable, "-m", "ledger", "--help"], env=env, capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert helped.returncode == 0
    assert all(c in helped.stdout for c in ("allocate", "screen", "export", "verify", "balances", "review"))
    assert "sum(share::numeric)" in helped.stdout  # where allocation input comes from is documented
