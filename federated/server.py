"""The simulation's ServerApp: FedAvg wrapped in a `RoundRecorder`, evaluated every round.

The server process keeps its own `TailTrainer` to evaluate each round's global
arrays on the cached held-out sets (Flower's `evaluate_fn` hook):
``asr`` = share of triggered held-out prompts for which greedy decoding
reproduces the sentinel (teacher-forced exact match), ``false_trigger`` = the
same on clean prompts, and ``token_acc`` = greedy token accuracy on the cases'
reference responses.

A run repeats bit for bit for a seed. Flower gives nodes random ids each run,
and FedAvg samples `random.sample(list of node ids, k)`, so a seeded `random`
alone does not fix who trains. Before round 1 the server asks every node for
its client id (a ``query`` message), lists the nodes in client-id order for
the strategy, and reseeds `random` from the seed and the round before each
sample. The recorder aggregates replies in client-id order too.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from tqdm.auto import tqdm

from federated.errors import FederatedError
from federated.flower_app import WorkSpec, load_examples, load_trainer, make_client_app
from federated.recorder import RoundRecorder, client_id
from federated.tail import response_logits

METRIC_NAMES = {  # (protocol kind, eval set) -> metric name
    ("backdoor", "eval-cases"): "asr", ("backdoor", "eval-clean"): "false_trigger",
    ("domains", "eval-cases"): "exact", ("domains", "eval-clean"): "clean_exact",
}


def evaluate_sets(trainer, sets: dict[str, tuple], protocol: str) -> dict[str, float]:
    kind = "domains" if protocol == "domains" else "backdoor"
    out = {}
    for name, (states, encoded) in sets.items():
        hits = trainer.sentinel_hits(states, encoded)
        out[METRIC_NAMES[kind, name]] = sum(hits) / max(1, len(hits))
    with torch.no_grad():
        states, encoded = sets["eval-cases"]
        logits, targets = response_logits(trainer.tail, states, encoded)
        out["token_acc"] = float((logits.argmax(-1) == targets).float().mean())
    return out


class ClientOrderedGrid:
    """`grid`, listing its node ids in their clients' id order (unknown nodes last, by node id)."""

    def __init__(self, grid: Grid, clients: dict[int, str]) -> None:
        self._grid, self.clients = grid, clients

    def get_node_ids(self) -> list[int]:
        return sorted(self._grid.get_node_ids(), key=lambda n: (n not in self.clients, self.clients.get(n, ""), n))

    def __getattr__(self, name: str):
        return getattr(self.__dict__["_grid"], name)


def node_clients(grid: Grid, expected: int, *, timeout: float = 600.0) -> dict[int, str]:
    """Node id -> registered client id, asked of every node with one ``query`` message."""
    nodes = sorted(grid.get_node_ids())
    if len(nodes) < expected:
        raise FederatedError(f"{len(nodes)} of {expected} simulated nodes are connected")
    replies = list(grid.send_and_receive([Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
                                          for n in nodes], timeout=timeout))
    failed = [r for r in replies if r.has_error()]
    if failed or len(replies) != len(nodes):
        reason = failed[0].error.reason if failed else f"{len(replies)} of {len(nodes)} nodes replied"
        raise FederatedError(f"asking the nodes for their client ids failed: {reason}")
    return {r.metadata.src_node_id: client_id(r) for r in replies}


class SeededFedAvg(FedAvg):
    """FedAvg whose node sample depends only on `seed`, the round and the (ordered) node list."""

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        random.seed(self.seed * 1_000_003 + server_round)
        return super().configure_train(server_round, arrays, config, grid)


def make_server_app(cfg, prepared, rounds_dir: Path, metrics: list[dict], recorded: list[Path],
                    progress: bool) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        spec = WorkSpec.load(prepared.work)
        trainer = load_trainer(prepared.work, spec)
        sets = {n: load_examples(prepared.work / "data" / f"{n}.safetensors") for n in prepared.eval_names}
        bar = tqdm(total=cfg.rounds, desc=f"{cfg.federation} rounds", unit="round", disable=not progress)

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            trainer.load(arrays.to_torch_state_dict())
            row = {"round": server_round, **evaluate_sets(trainer, sets, cfg.protocol)}
            metrics.append(row)
            bar.set_postfix({k: round(v, 3) for k, v in row.items() if k != "round"})
            return MetricRecord(row)

        recorder = build_recorder(cfg, prepared, rounds_dir, on_round=lambda r, p: bar.update(1))
        ordered = ClientOrderedGrid(grid, node_clients(grid, cfg.clients))
        recorder.start(grid=ordered, initial_arrays=ArrayRecord(trainer.arrays()), num_rounds=cfg.rounds,
                       evaluate_fn=evaluate)
        recorded.extend(recorder.rounds)
        bar.close()

    return app


def build_recorder(cfg, prepared, rounds_dir: Path, on_round=None) -> RoundRecorder:
    from federated.simulate import tracked_modules

    n = cfg.per_round
    inner = SeededFedAvg(fraction_train=n / cfg.clients, fraction_evaluate=0.0, min_train_nodes=n,
                         min_evaluate_nodes=0, min_available_nodes=cfg.clients, seed=cfg.seed)
    blocks = cfg.train_blocks if cfg.record_all_trained else cfg.record_blocks
    return RoundRecorder(inner, rounds_dir, federation=cfg.federation, base_model=prepared.base_model,
                         kind="peft" if cfg.mode == "lora" else "weights",
                         client_modules=tracked_modules(prepared.n_layers, blocks),
                         lora_scaling=cfg.lora.scaling if cfg.mode == "lora" else None, on_round=on_round)


def run_flower(cfg, prepared, rounds_dir: Path, *, progress: bool = True) -> tuple[list[dict], list[Path]]:
    """Run the federation on Flower's simulation runtime; returns per-round metrics and round folders."""
    from flwr.simulation import run_simulation

    from federated.simulate import quiet_flower

    quiet_flower()
    metrics: list[dict] = []
    recorded: list[Path] = []
    server = make_server_app(cfg, prepared, rounds_dir, metrics, recorded, progress)
    workers = min(cfg.cpus, cfg.per_round)
    backend = {"client_resources": {"num_cpus": cfg.cpus / workers, "num_gpus": 0.0},
               "init_args": {"num_cpus": cfg.cpus, "num_gpus": 0, "log_to_driver": True}}
    run_simulation(server_app=server, client_app=make_client_app(prepared.work), num_supernodes=cfg.clients,
                   backend_config=backend)
    _shutdown_ray()
    if len(recorded) != cfg.rounds:
        raise FederatedError(f"the federation recorded {len(recorded)} of {cfg.rounds} rounds; "
                             "see the Flower log above for the failing client")
    return metrics, recorded


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
