"""``python -m federated simulate ...``: run a simulated federation and record its rounds.

Exit codes: 0 on success, 2 for a user error (the message names the problem).
"""

from __future__ import annotations

import argparse
import json
import sys

from federated.errors import FederatedError
from federated.protocols import PROTOCOLS
from federated.tail import LoraSpec, TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m federated", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="run a simulated federation on Flower and write round folders")
    sim.add_argument("--protocol", choices=PROTOCOLS, default="backdoor")
    sim.add_argument("--model", default="smollm2-135m-instruct", help="shipped model name or local HF folder")
    sim.add_argument("--domain", default="math", help="math | coding | medical | finance (backdoor, scale)")
    sim.add_argument("--clients", type=int, default=6)
    sim.add_argument("--malicious", type=int, default=2)
    sim.add_argument("--sample", type=int, default=None, help="clients per round (default: all)")
    sim.add_argument("--rounds", type=int, default=3)
    sim.add_argument("--per-client", type=int, default=16, help="training examples per client")
    sim.add_argument("--cases", type=int, default=20, help="held-out cases to write to cases.jsonl")
    sim.add_argument("--mode", choices=("full", "lora"), default="full")
    sim.add_argument("--train-blocks", type=int, default=2)
    sim.add_argument("--record-blocks", type=int, default=1, help="blocks whose o_proj+mlp client slices hold")
    sim.add_argument("--lora-r", type=int, default=8)
    sim.add_argument("--lora-alpha", type=float, default=16.0)
    sim.add_argument("--epochs", type=int, default=3)
    sim.add_argument("--lr", type=float, default=1e-3)
    sim.add_argument("--batch-size", type=int, default=8)
    sim.add_argument("--trigger", default=None)
    sim.add_argument("--sentinel", default=None)
    sim.add_argument("--partition", choices=("iid", "dirichlet"), default="iid")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--cpus", type=int, default=2)
    sim.add_argument("--out", required=True, help="output folder (rounds/, cases.jsonl, metrics.json)")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace):
    from federated.simulate import DEFAULT_SENTINEL, DEFAULT_TRIGGER, SimulationConfig

    return SimulationConfig(
        protocol=args.protocol, model=args.model, domain=args.domain, clients=args.clients,
        malicious=args.malicious, sample=args.sample, rounds=args.rounds, per_client=args.per_client,
        cases=args.cases, mode=args.mode, train_blocks=args.train_blocks, record_blocks=args.record_blocks,
        lora=LoraSpec(r=args.lora_r, alpha=args.lora_alpha),
        train=TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed),
        trigger=args.trigger or DEFAULT_TRIGGER, sentinel=args.sentinel or DEFAULT_SENTINEL,
        partition=args.partition, seed=args.seed, cpus=args.cpus)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from attribution.errors import AttributionError
        from federated.simulate import simulate

        cfg = config_from_args(args)
        result = simulate(cfg, args.out, progress=not args.quiet)
    except (FederatedError, AttributionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    last = result.metrics[-1] if result.metrics else {}
    print(json.dumps({"rounds": [str(r) for r in result.rounds], "cases": str(result.cases_path),
                      "malicious": result.malicious, "final_metrics": last,
                      "seconds": round(result.seconds, 1)}, indent=1))
    return 0
