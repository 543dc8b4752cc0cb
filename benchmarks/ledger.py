"""Ledger benchmark: one period over 1,000 clients and 1,000,000 share rows, and posting throughput.

    python benchmarks/ledger.py [--clients 1000] [--rows 1000000] [--transactions 2000] [--keep]
    python benchmarks/ledger.py --screen-run RUN_DIR [RUN_DIR ...]

It creates a scratch database ``protoken_bench_ledger`` on the server of
DATABASE_URL (or the embedded Postgres), migrates it, loads the share rows
with COPY (one row per generation and client, ten clients per generation,
Dirichlet shares), then times the period exactly as `python -m ledger
allocate --table` runs it: aggregate in SQL (``sum(share::numeric)``),
allocate (pure), post one balanced transaction of ~1,000 entries and commit
with the deferred balance trigger on. Each figure is printed next to the
issue's 30 s target as a ratio. Finally it posts single two-entry
transactions, each committed on its own (chain lock, idempotency lookup,
balance trigger at commit), and reports transactions per second.

With ``--screen-run`` it instead runs the update-based screen on the round
folders of simulated federations (``python -m federated simulate`` output:
``RUN_DIR/rounds/round-*`` and ``RUN_DIR/metrics.json`` naming the malicious
clients) and prints precision and recall against that ground truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dbenv  # noqa: E402
from ledger import allocate, db, fund_pool, post_allocation, post_transaction, transfer, verify  # noqa: E402
from ledger.inputs import contributions_from_table, rounds_statistics  # noqa: E402
from ledger.migrate import upgrade  # noqa: E402
from ledger.screening import screen_updates  # noqa: E402

TARGET_S = 30.0
DATABASE = "protoken_bench_ledger"
POOL = 100_000_000  # minor units


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-generation", type=int, default=10, help="clients with a share in each generation")
    parser.add_argument("--transactions", type=int, default=2000, help="single transactions for throughput")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--screen-run", nargs="+", metavar="RUN_DIR", help="screen simulated federations instead")
    args = parser.parse_args(argv)
    if args.clients < args.per_generation or args.rows < args.per_generation or args.transactions < 1:
        parser.error("need clients >= per-generation, rows >= per-generation and transactions >= 1")
    return args


def _maintenance(server: str) -> str:
    # The database named in DATABASE_URL may not exist yet on a fresh server; "postgres" always does.
    return dbenv.with_scheme(dbenv.with_database(server, "postgres"), "postgresql")


def fresh_database() -> str:
    server = dbenv.database_url()
    with psycopg.connect(_maintenance(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    url = dbenv.with_database(server, DATABASE)
    upgrade(url)
    return url


def drop_database() -> None:
    db.dispose_engine()
    with psycopg.connect(_maintenance(dbenv.database_url()), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def share_rows(clients: int, rows: int, per_generation: int, seed: int = 0) -> bytes:
    """COPY text: period, client_id, generation_id, share; each generation's shares sum to 1."""
    rng = np.random.default_rng(seed)
    generations = rows // per_generation
    weights = rng.pareto(1.5, clients) + 0.1  # some clients contribute far more than others
    picked = np.concatenate([_weighted_sample(rng, np.log(weights), per_generation, min(10_000, generations - start))
                             for start in range(0, generations, 10_000)])  # (G, per_generation)
    shares = rng.dirichlet(np.ones(per_generation), size=generations)  # (G, per_generation)
    gen_ids = np.repeat(np.arange(generations), per_generation)
    lines = (f"2025-06\tclient-{c:04d}\t{g}\t{s!r}" for c, g, s in zip(picked.ravel().tolist(), gen_ids.tolist(), shares.ravel().tolist(),
                                                                            strict=True))
    return ("\n".join(lines) + "\n").encode()


def _weighted_sample(rng, log_weights: np.ndarray, k: int, rows: int) -> np.ndarray:
    """`rows` draws of k distinct clients with probability ~ weights (Gumbel top-k), shape (rows, k)."""
    keys = log_weights + rng.gumbel(size=(rows, len(log_weights)))  # (rows, clients)
    return np.argpartition(-keys, k - 1, axis=1)[:, :k]


def load_shares(url: str, payload: bytes) -> None:
    with psycopg.connect(dbenv.with_scheme(url, "postgresql")) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        conn.execute("CREATE TABLE bench.shares (period text, client_id text, generation_id bigint, "
                     "share double precision)")
        with conn.cursor().copy("COPY bench.shares FROM STDIN") as copy:
            for start in range(0, len(payload), 1 << 22):
                copy.write(payload[start:start + (1 << 22)])
        conn.execute("ANALYZE bench.shares")


def timed(label: str, timings: list, fn):
    start = time.perf_counter()
    result = fn()
    timings.append((label, time.perf_counter() - start))
    return result


def run_period(url: str, timings: list) -> dict:
    federation = "bench-period"
    with db.session_scope(url) as session:
        fund_pool(session, federation=federation, amount=POOL, currency="EUR", idempotency_key="fund")
    start = time.perf_counter()
    with db.session_scope(url) as session:
        contributions = timed("aggregate 1M rows in SQL", timings, lambda: contributions_from_table(
            session, "bench.shares", period_column="period", period="2025-06"))
        result = timed("allocate (pure maths)", timings, lambda: allocate(contributions, POOL))
        posted = timed("allocate + post transaction", timings, lambda: post_allocation(
            session, federation=federation, period="2025-06", currency="EUR", pool_amount=POOL,
            contributions=contributions))
        commit_start = time.perf_counter()
        session.commit()
        timings.append(("commit (balance trigger)", time.perf_counter() - commit_start))
    timings.append(("period end to end", time.perf_counter() - start))
    assert posted.allocation.total + posted.allocation.retained == POOL and result.amounts == posted.allocation.amounts
    return {"clients": len(contributions), "entries": len(posted.allocation.amounts) + 1}


def run_throughput(url: str, count: int) -> float:
    federation = "bench-throughput"
    with db.session_scope(url) as session:
        fund_pool(session, federation=federation, amount=10**15, currency="EUR", idempotency_key="fund")
    start = time.perf_counter()
    for i in range(count):
        with db.session_scope(url) as session:
            post_transaction(session, federation=federation, kind="adjustment", idempotency_key=f"t{i}",
                             legs=transfer(("pool", ""), ("payable", f"client-{i % 100:03d}"), 1 + i % 7, "EUR"))
    return count / (time.perf_counter() - start)


def print_table(rows: list[tuple[str, float]]) -> None:
    print(f"{'step':<32} {'seconds':>9} {'target s':>9} {'ratio':>8}")
    for label, seconds in rows:
        print(f"{label:<32} {seconds:>9.3f} {TARGET_S:>9.0f} {seconds / TARGET_S:>8.3f}")


def screen_runs(run_dirs: list[str]) -> None:
    """Precision/recall of the update-based screen on simulated federations with known malicious clients."""
    print(f"{'run':<40} {'clients':>7} {'malicious':>9} {'flagged':>7} {'precision':>9} {'recall':>6}")
    for run in run_dirs:
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        truth = set(metrics["malicious"])
        stats = rounds_statistics(sorted(str(p) for p in (Path(run) / "rounds").glob("round-*")))
        flagged = screen_updates(stats).flagged
        hits = len(flagged & truth)
        precision = hits / len(flagged) if flagged else float("nan")
        recall = hits / len(truth) if truth else float("nan")
        print(f"{str(run)[-40:]:<40} {len(metrics['client_ids']):>7} {len(truth):>9} {len(flagged):>7} "
              f"{precision:>9.2f} {recall:>6.2f}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.screen_run:
        screen_runs(args.screen_run)
        return
    setup: list = []
    url = timed("create + migrate database", setup, fresh_database)
    try:
        payload = timed("generate rows (numpy)", setup, lambda: share_rows(args.clients, args.rows,
                                                                          args.per_generation))
        timed(f"COPY {args.rows:,} rows", setup, lambda: load_shares(url, payload))
        timings: list = []
        shape = run_period(url, timings)
        rate = run_throughput(url, args.transactions)
        with db.session_scope(url) as session:
            report = timed("verify both federations", setup, lambda: verify(session))
        print(f"\nledger benchmark: {shape['clients']} clients, {args.rows:,} share rows, "
              f"{shape['entries']} entries in the allocation transaction\n")
        print("setup (not part of the target)")
        for label, seconds in setup:
            print(f"  {label:<30} {seconds:>9.3f} s")
        print("\none period (target: under 30 s)")
        print_table(timings)
        print(f"\nsingle-transaction posting, one commit each, balance trigger on: {rate:,.0f} transactions/s "
              f"({args.transactions} transactions)")
        print(f"verify: ok={report.ok}, {report.records} records, {report.entries} entries")
    finally:
        if not args.keep:
            drop_database()


if __name__ == "__main__":
    main()
