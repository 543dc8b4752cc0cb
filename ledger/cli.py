"""``python -m ledger``: allocate, screen, export, verify, balances, review (and migrate).

Every command works on the database of ``--database-url``, else DATABASE_URL,
else the embedded Postgres (`dbenv`), inside one transaction that commits
only if the whole command succeeds. User errors (bad arguments, bad files,
refused operations) print one line ``ledger: error: ...`` on stderr and exit
with code 2; `verify` exits with 1 when it finds a problem. ``--json``
prints the result as JSON instead of a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from tqdm import tqdm

from ledger import db, exports, flags, inputs, journal, rewards
from ledger.allocation import AllocationRules
from ledger.errors import LedgerError
from ledger.screening import EvidenceConfig, ScreeningResult, UpdateConfig, screen_evidence, screen_updates
from ledger.verify import verify

EPILOG = """\
contribution input of `allocate` (one of):
  --input FILE.csv|FILE.jsonl   rows with a client column and a share column (one row per generation
                                or per client; a client's rows are summed exactly)
  --table [SCHEMA.]TABLE        the same rows in a SQL table of the ledger's database, summed in SQL
                                as numeric: SELECT client, sum(share::numeric) ... GROUP BY client
  --basis sequence_share reads column `share`; --basis token_mass reads column `token_mass`
  (override with --share-column); --period-column restricts rows to --period.

screening input of `screen` (one or both):
  --evidence FILE.jsonl  one generation per line: {"generation_id", "round", "shares": {client: share},
                         "harmful": bool, "token_top_clients": [client, ...], "response": "..."}
  --rounds DIR ...       protoken-round/1 folders; client updates are read from clients[].path
"""


class CommandError(LedgerError):
    """A command-line level problem (e.g. no screening input given)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other user error
        self.exit(2, f"ledger: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m ledger", description="The ProToken ledger: rewards, screening, payouts.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="postgresql:// URL (default: DATABASE_URL or the embedded server)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _allocate_parser(commands)
    _screen_parser(commands)
    _export_parser(commands)
    verify_cmd = commands.add_parser("verify", help="check hash chains, balances and exports")
    verify_cmd.add_argument("--federation", help="only this federation (default: all)")
    balances_cmd = commands.add_parser("balances", help="account balances of a federation")
    balances_cmd.add_argument("--federation", required=True)
    balances_cmd.add_argument("--currency")
    balances_cmd.add_argument("--client")
    _review_parser(commands)
    commands.add_parser("migrate", help="alembic upgrade head for schema ledger")
    return parser


def _allocate_parser(commands) -> None:
    cmd = commands.add_parser("allocate", help="allocate a period's pool over contributions and post it",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("--federation", required=True)
    cmd.add_argument("--period", required=True)
    cmd.add_argument("--currency", required=True)
    cmd.add_argument("--pool-amount", type=int, required=True, help="minor units")
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="CSV or JSONL contribution rows")
    source.add_argument("--table", help="[schema.]table with contribution rows")
    cmd.add_argument("--basis", choices=rewards.BASES, default="sequence_share")
    cmd.add_argument("--client-column", default="client_id")
    cmd.add_argument("--share-column", help="default: share, or token_mass with --basis token_mass")
    cmd.add_argument("--period-column", help="only rows whose column equals --period")
    cmd.add_argument("--minimum-payout", type=int, default=0)
    cmd.add_argument("--cap", type=int, help="cap per client, minor units")
    cmd.add_argument("--exclude", nargs="*", default=[], metavar="CLIENT", help="suspended clients")
    cmd.add_argument("--flagged-policy", choices=("hold", "exclude"), default="hold")
    cmd.add_argument("--fund", action="store_true", help="first move --pool-amount from funding into the pool")
    cmd.add_argument("--idempotency-key")
    cmd.add_argument("--dry-run", action="store_true", help="compute and post, then roll back")


def _screen_parser(commands) -> None:
    cmd = commands.add_parser("screen", help="flag suspicious clients from evidence and/or client updates",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("--federation", required=True)
    cmd.add_argument("--period", required=True)
    cmd.add_argument("--evidence", help="JSONL of generations")
    cmd.add_argument("--baseline", help="JSON {client: baseline share} (default: estimated from the evidence)")
    cmd.add_argument("--policy", help='JSON harm policy {"patterns": [regex...], "keywords": [...]}')
    cmd.add_argument("--rounds", nargs="+", default=[], metavar="DIR", help="protoken-round/1 folders")
    cmd.add_argument("--modules", nargs="+", metavar="SUBSTRING", help="only tensors whose name contains one")
    cmd.add_argument("--q", type=float, default=0.05, help="Benjamini-Hochberg false discovery rate")
    cmd.add_argument("--min-median-z", type=float, default=3.0)
    cmd.add_argument("--record", action="store_true", help="store the findings as open flags")


def _export_parser(commands) -> None:
    cmd = commands.add_parser("export", help="write the payout files of a period (idempotent)")
    cmd.add_argument("--federation", required=True)
    cmd.add_argument("--period", required=True)
    cmd.add_argument("--currency", required=True)
    cmd.add_argument("--out", required=True, help="directory for the CSV and JSON files")


def _review_parser(commands) -> None:
    cmd = commands.add_parser("review", help="list flags, or move one to confirmed/dismissed/open")
    cmd.add_argument("--federation", required=True)
    cmd.add_argument("--flag", type=int, help="flag id to review (omit to list flags)")
    cmd.add_argument("--state", choices=("open", "confirmed", "dismissed"))
    cmd.add_argument("--actor", help="who reviews (required with --flag)")
    cmd.add_argument("--note", default="")
    cmd.add_argument("--no-release", action="store_true", help="keep held payouts after a dismissal")
    cmd.add_argument("--forfeit", action="store_true", help="after confirming, return held payouts to the pool")


# --- commands --------------------------------------------------------------------------------------


def cmd_allocate(session, args) -> dict:
    column = args.share_column or ("token_mass" if args.basis == "token_mass" else "share")
    if args.input:
        contributions = inputs.read_contributions(args.input, share_column=column, client_column=args.client_column,
                                                  period_column=args.period_column, period=args.period)
    else:
        contributions = inputs.contributions_from_table(
            session, args.table, client_column=args.client_column, share_column=column,
            period_column=args.period_column, period=args.period)
    rules = AllocationRules(minimum_payout=args.minimum_payout, cap_per_client=args.cap,
                            excluded=frozenset(args.exclude), flagged_policy=args.flagged_policy)
    if args.fund:
        rewards.fund_pool(session, federation=args.federation, amount=args.pool_amount, currency=args.currency,
                          idempotency_key=f"funding:{args.period}:{args.currency}")
    posted = rewards.post_allocation(
        session, federation=args.federation, period=args.period, currency=args.currency,
        pool_amount=args.pool_amount, contributions=contributions, rules=rules, basis=args.basis,
        idempotency_key=args.idempotency_key)
    if args.dry_run:
        session.rollback()
    a = posted.allocation
    return {"transaction_seq": None if args.dry_run else posted.receipt.seq, "replayed": posted.replayed,
            "dry_run": args.dry_run, "pool": a.pool, "allocated": a.total, "retained": a.retained,
            "clients_paid": len(a.amounts), "held": a.held, "amounts": a.amounts, "not_paid": a.not_paid}


def cmd_screen(session, args) -> dict:
    if not args.evidence and not args.rounds:
        raise CommandError("give --evidence and/or --rounds: there is nothing to screen")
    results: list[ScreeningResult] = []
    if args.evidence:
        records = inputs.read_evidence(args.evidence)
        baseline = inputs.read_baseline(args.baseline) if args.baseline else None
        policy = inputs.read_policy(args.policy) if args.policy else None
        results.append(screen_evidence(records, baseline, EvidenceConfig(q=args.q), policy))
    if args.rounds:
        progress = _bar("rounds", len(args.rounds))
        stats = inputs.rounds_statistics(args.rounds, args.modules, progress=progress)
        results.append(screen_updates(stats, UpdateConfig(q=args.q, min_median_z=args.min_median_z)))
    recorded = []
    if args.record:
        findings = [f for r in results for f in r.findings]
        recorded = flags.record_findings(session, federation=args.federation, period=args.period, findings=findings)
    return {"methods": [{"method": r.method, "flagged": sorted(r.flagged), "notes": r.notes, "table": r.table}
                        for r in results],
            "recorded_flags": [{"id": v.id, "client_id": v.client_id, "method": v.method, "state": v.state}
                               for v in recorded]}


def cmd_export(session, args) -> dict:
    files = exports.export_payouts(session, federation=args.federation, period=args.period, currency=args.currency)
    csv_path, json_path = files.write(args.out)
    return {"csv": str(csv_path), "json": str(json_path), "csv_sha256": files.csv_sha256,
            "json_sha256": files.json_sha256, "lines": len(files.lines), "total": files.total,
            "payout_transaction_seq": files.transaction_seq, "replayed": files.replayed}


def cmd_verify(session, args) -> dict:
    bar = tqdm(desc="verify", unit="federation", disable=None, file=sys.stderr)
    report = verify(session, args.federation, progress=lambda name: bar.update(1))
    bar.close()
    return {"ok": report.ok, "federations": len(report.federations), "records": report.records,
            "entries": report.entries, "exports": report.exports,
            "heads": {name: {"seq": s, "hash": h} for name, (s, h) in report.heads.items()},
            "problems": report.problems}


def cmd_balances(session, args) -> dict:
    rows = journal.balances(session, args.federation, currency=args.currency, client_id=args.client)
    return {"balances": [{"kind": b.kind, "client_id": b.client_id, "currency": b.currency, "balance": b.balance}
                         for b in rows]}


def cmd_review(session, args) -> dict:
    if args.flag is None:
        views = flags.list_flags(session, args.federation, state=args.state)
        return {"flags": [_flag_row(v) for v in views]}
    if not args.state or not args.actor:
        raise CommandError("reviewing a flag needs --state and --actor")
    review = flags.review_flag(session, federation=args.federation, flag_id=args.flag, state=args.state,
                               actor=args.actor, note=args.note, release=not args.no_release)
    forfeited = []
    if args.forfeit:
        forfeited = rewards.forfeit_held(session, federation=args.federation, client_id=review.flag.client_id,
                                         actor=args.actor)
    return {"flag": _flag_row(review.flag), "previous_state": review.previous_state, "changed": review.changed,
            "released_seqs": [r.seq for r in review.released], "forfeited_seqs": [r.seq for r in forfeited]}


def _flag_row(view: flags.FlagView) -> dict:
    return {"id": view.id, "client_id": view.client_id, "period": view.period, "method": view.method,
            "score": round(view.score, 4), "q_value": view.q_value, "state": view.state}


def cmd_migrate(session, args) -> dict:
    from ledger.migrate import upgrade

    upgrade(args.database_url)
    return {"migrated": True}


COMMANDS = {"allocate": cmd_allocate, "screen": cmd_screen, "export": cmd_export, "verify": cmd_verify,
            "balances": cmd_balances, "review": cmd_review, "migrate": cmd_migrate}


def _bar(desc: str, total: int):
    def wrap(items):
        return tqdm(items, desc=desc, total=total, disable=None, file=sys.stderr)
    return wrap


# --- output and main -----------------------------------------------------------------------------------


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return
    for key, value in result.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{key}:")
            _table(value)
        elif isinstance(value, dict) and len(value) > 12:
            print(f"{key}: {len(value)} entries (use --json to see them)")
        else:
            print(f"{key}: {value}")


def _table(rows: list[dict]) -> None:
    columns = [c for c in rows[0] if not isinstance(rows[0][c], list | dict)]
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    print("  " + "  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  " + "  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns))
    for row in rows:
        for key, value in row.items():
            if isinstance(value, list) and key == "notes":
                print("  " + "; ".join(value))
            if isinstance(value, list) and value and isinstance(value[0], dict):
                _table(value)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = _run(args)
    except LedgerError as exc:
        return _fail(str(exc))
    except OperationalError as exc:
        return _fail(f"cannot reach the database: {str(exc.orig).strip().splitlines()[0]}")
    except DBAPIError as exc:
        return _fail(_database_message(exc))
    _print(result, args.json)
    return 1 if args.command == "verify" and not result["ok"] else 0


def _run(args) -> dict:
    if args.command == "migrate":
        return cmd_migrate(None, args)
    with db.session_scope(args.database_url) as session:
        return COMMANDS[args.command](session, args)


def _database_message(exc: DBAPIError) -> str:
    first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    if "does not exist" in first and "ledger." in first:
        return f"{first}; run `python -m ledger migrate` first"
    return f"the database refused the operation: {first}"


def _fail(message: str) -> int:
    print(f"ledger: error: {message}", file=sys.stderr)
    return 2
