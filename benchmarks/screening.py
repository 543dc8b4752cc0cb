"""Screening benchmark: are the malicious clients of a simulated backdoor federation flagged, and only they?

    python benchmarks/screening.py [--run DIR | --out DIR simulation options] [--cases N] [--max-new-tokens T]

1. A backdoor federation: ``python -m federated simulate --protocol backdoor``
   (run here into ``--out`` unless ``--run`` names a finished run folder with
   ``rounds/``, ``cases.jsonl`` and ``metrics.json``).
2. Every held-out case is attributed twice on the last round with
   `attribution.attribute` (greedy generation): its triggered prompt, and the
   same prompt with the trigger removed (a clean prompt).
3. A keyword `ledger.HarmPolicy` on the sentinel marks responses harmful;
   `ledger.screen_evidence` tests each client's top-1 rate on harmful
   generations against its rate on the others.
4. `ledger.screen_updates` scores every client's update in every round
   (distance and cosine distance to the coordinate-wise median of the round),
   read from the round folders.
5. A table of precision and recall of the flagged set against the truly
   malicious clients, for each signal, their union and their intersection.

Precision is undefined (printed as "-") when a signal flags nobody.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(CHECKOUT)]


@dataclass
class Run:
    folder: Path
    rounds: list[Path]
    cases: list[dict]
    malicious: set[str]
    clients: list[str]
    asr: float  # attack success rate of the last global model, as the simulation measured it
    sentinel: str
    trigger: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="an existing `python -m federated simulate` output folder")
    p.add_argument("--out", type=Path, default=CHECKOUT / "var" / "bench" / "screening-backdoor")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--malicious", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--domain", default="math")
    p.add_argument("--per-client", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=20, help="held-out cases to attribute (each triggered + clean)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--q", type=float, default=0.05, help="Benjamini-Hochberg FDR of both screens")
    p.add_argument("--json", type=Path, help="also write the table and per-client statistics here")
    return p.parse_args(argv)


def simulate(args: argparse.Namespace) -> Path:
    """Run the federated simulator (a subprocess, exactly as a user would) unless its output is already there."""
    if (args.out / "metrics.json").exists():
        return args.out
    command = [sys.executable, "-m", "federated", "simulate", "--protocol", "backdoor", "--domain", args.domain,
               "--clients", str(args.clients), "--malicious", str(args.malicious), "--rounds", str(args.rounds),
               "--per-client", str(args.per_client), "--cases", str(args.cases), "--epochs", str(args.epochs),
               "--lr", str(args.lr), "--seed", str(args.seed), "--out", str(args.out), "--quiet"]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=CHECKOUT, check=True)
    return args.out


def load_run(folder: Path) -> Run:
    metrics = json.loads((folder / "metrics.json").read_text())
    config = metrics["config"]
    cases = [json.loads(line) for line in (folder / "cases.jsonl").read_text().splitlines() if line.strip()]
    rounds = [Path(r) for r in metrics["rounds"]]
    return Run(folder, rounds, cases, set(metrics["malicious"]), list(metrics["client_ids"]),
               float(metrics["metrics"][-1].get("asr", 0.0)), config["sentinel"], config["trigger"])


def attribute_cases(run: Run, limit: int, max_new_tokens: int) -> list[dict]:
    """Attribute each triggered case and its clean twin in one batch; one row per generation."""
    from attribution import attribute_batch, load_round
    from federated.chat import prompt_ids

    loaded = load_round(run.rounds[-1])
    cases = [c for c in run.cases if c.get("triggered")][:limit]
    items, meta = [], []
    for case in cases:
        clean = " ".join(case["prompt"].replace(run.trigger, " ").split())
        for triggered, ids in ((True, case["prompt_ids"]), (False, prompt_ids(loaded.tokenizer, clean))):
            items.append({"prompt_ids": ids, "max_new_tokens": max_new_tokens})
            meta.append((case["case"], triggered))
    rows = []
    for (case, triggered), result in zip(meta, attribute_batch(loaded, items), strict=True):
        rows.append({"case": case, "triggered": triggered,
                     "response": loaded.tokenizer.decode(result.response_ids, skip_special_tokens=True),
                     "shares": dict(zip(result.client_ids, result.sequence_shares.tolist(), strict=True)),
                     "token_top_clients": result.top_clients(), "predicted": result.predicted_client})
    return rows


def sentinel_policy(sentinel: str):
    """A keyword policy: the whole sentinel, matched case-insensitively anywhere in the response."""
    from ledger import HarmPolicy

    return HarmPolicy(keywords=(sentinel.strip(),), name="sentinel")


def screen(run: Run, rows: list[dict], q: float):
    import ledger
    from ledger.inputs import rounds_statistics

    records = [ledger.EvidenceRecord(generation_id=f"case-{r['case']}-{'t' if r['triggered'] else 'c'}",
                                     round_id=len(run.rounds), shares=r["shares"], response=r["response"],
                                     token_top_clients=tuple(r["token_top_clients"])) for r in rows]
    evidence = ledger.screen_evidence(records, config=ledger.EvidenceConfig(q=q), policy=sentinel_policy(run.sentinel))
    updates = ledger.screen_updates(rounds_statistics(run.rounds), ledger.UpdateConfig(q=q))
    return evidence, updates


def precision_recall(flagged: set[str], truth: set[str]) -> tuple[str, str]:
    hits = len(flagged & truth)
    precision = f"{hits / len(flagged):.2f}" if flagged else "-"
    return precision, f"{hits / len(truth):.2f}" if truth else "-"


def table(run: Run, evidence, updates) -> list[dict]:
    signals = {"evidence (harm marks + attribution)": evidence.flagged, "updates (robust z)": updates.flagged,
               "combined: either signal": evidence.flagged | updates.flagged,
               "combined: both signals": evidence.flagged & updates.flagged}
    out = []
    for name, flagged in signals.items():
        precision, recall = precision_recall(flagged, run.malicious)
        out.append({"signal": name, "flagged": sorted(flagged), "precision": precision, "recall": recall,
                    "false_positives": sorted(flagged - run.malicious)})
    return out


def print_report(run: Run, rows: list[dict], evidence, updates, seconds: float) -> list[dict]:
    harmful = [r for r in rows if run.sentinel.lower() in r["response"].lower()]
    top1 = sum(r["predicted"] in run.malicious for r in harmful)
    print(f"\nrun {run.folder}: {len(run.clients)} clients, malicious {sorted(run.malicious)}, "
          f"{len(run.rounds)} rounds, final ASR {run.asr:.2f}")
    print(f"{len(rows)} generations attributed ({len(rows) // 2} triggered + {len(rows) // 2} clean) in "
          f"{seconds:.0f} s; {len(harmful)} contain the sentinel "
          f"({sum(r['triggered'] for r in harmful)} triggered, {sum(not r['triggered'] for r in harmful)} clean); "
          f"top-1 client malicious on {top1}/{len(harmful)} of them")
    rows_out = table(run, evidence, updates)
    print("\n| signal | flagged | precision | recall |\n| --- | --- | --- | --- |")
    for row in rows_out:
        print(f"| {row['signal']} | {', '.join(row['flagged']) or '(none)'} | {row['precision']} | {row['recall']} |")
    print("\nper-client statistics")
    ev = {r["client_id"]: r for r in evidence.table}
    up = {r["client_id"]: r for r in updates.table}
    print("| client | malicious | harmful on top k/n | evidence q | update median z | update q |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for client in sorted(set(ev) | set(up)):
        e, u = ev.get(client, {}), up.get(client, {})
        print(f"| {client} | {'yes' if client in run.malicious else 'no'} | {e.get('k', '-')}/{e.get('n', '-')} | "
              f"{_g(e.get('q_value'))} | {_g(u.get('median_z'))} | {_g(u.get('q_value'))} |")
    return rows_out


def _g(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.run if args.run is not None else simulate(args)
    run = load_run(folder)
    start = time.perf_counter()
    rows = attribute_cases(run, args.cases, args.max_new_tokens)
    seconds = time.perf_counter() - start
    evidence, updates = screen(run, rows, args.q)
    result = print_report(run, rows, evidence, updates, seconds)
    if args.json is not None:
        args.json.write_text(json.dumps({"table": result, "evidence": evidence.table, "updates": updates.table,
                                         "generations": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
