"""Flower ClientApp / ServerApp for the offline simulation (Message API).

The simulation driver prepares a *work folder* before Flower starts:

    work/spec.json                 `WorkSpec`: mode, blocks, LoRA, training config, client ids
    work/tail/                     the frozen tail model (last k blocks + norm + lm_head)
    work/data/<client>.safetensors that client's cached trunk states and token ids
    work/data/eval-*.safetensors   held-out sets the server evaluates on each round

Client apps run in Ray actor processes, so they read that folder (once per
process, memoised) instead of sharing Python objects. A client trains the
tail on its cached states and replies with its arrays (base-model names), a
MetricRecord with ``num-examples`` and ``train-loss``, and a ConfigRecord
with its registered ``client-id``. A ``query`` message is answered with that
ConfigRecord alone: the server asks every node once, before round 1, so it
can sample clients by id (node ids are random per run). Data is stored with
safetensors only.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from safetensors.torch import load_file, save_file

from federated.chat import Encoded
from federated.local import TailTrainer
from federated.recorder import CLIENT_ID_KEY
from federated.tail import LoraSpec, TrainConfig


@dataclass
class WorkSpec:
    """Everything a client process needs to train; stored as work/spec.json."""

    client_ids: list[str]
    first: int  # index of the first trained block in the base model
    mode: str = "full"
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    torch_threads: int = 1

    def save(self, work: Path) -> None:
        data = asdict(self)
        data["lora"]["targets"] = list(self.lora.targets)
        (work / "spec.json").write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, work: Path) -> WorkSpec:
        data = json.loads((work / "spec.json").read_text())
        data["lora"] = LoraSpec(**{**data["lora"], "targets": tuple(data["lora"]["targets"])})
        data["train"] = TrainConfig(**data["train"])
        return cls(**data)


def save_examples(path: Path, states: list[torch.Tensor], encoded: list[Encoded]) -> None:
    """Cached trunk states + ids of a set of examples, flattened into one safetensors file."""
    save_file({
        "states": torch.cat(states).contiguous(),  # (sum T_i, H)
        "ids": torch.tensor([t for e in encoded for t in e.ids], dtype=torch.long),
        "lengths": torch.tensor([len(e.ids) for e in encoded], dtype=torch.long),
        "prompt_lens": torch.tensor([e.prompt_len for e in encoded], dtype=torch.long),
    }, str(path))


def load_examples(path: Path) -> tuple[list[torch.Tensor], list[Encoded]]:
    data = load_file(str(path))
    lengths = data["lengths"].tolist()
    states = list(torch.split(data["states"], lengths))
    ids = torch.split(data["ids"], lengths)
    encoded = [Encoded(tuple(i.tolist()), int(p)) for i, p in zip(ids, data["prompt_lens"].tolist(), strict=True)]
    return states, encoded


def load_trainer(work: Path, spec: WorkSpec) -> TailTrainer:
    from transformers import AutoModelForCausalLM

    tail = AutoModelForCausalLM.from_pretrained(work / "tail", dtype=torch.float32, use_safetensors=True,
                                                local_files_only=True)
    tail.requires_grad_(False)
    return TailTrainer(tail.eval(), first=spec.first, mode=spec.mode, lora=spec.lora, seed=spec.seed)


@functools.lru_cache(maxsize=2)
def _client_process_state(work: str) -> tuple[WorkSpec, TailTrainer]:
    spec = WorkSpec.load(Path(work))
    torch.set_num_threads(spec.torch_threads)
    return spec, load_trainer(Path(work), spec)


@functools.lru_cache(maxsize=64)
def _client_data(work: str, cid: str) -> tuple[list[torch.Tensor], list[Encoded]]:
    return load_examples(Path(work) / "data" / f"{cid}.safetensors")


def client_train(work: str, msg: Message, context: Context) -> Message:
    """One client's local round: load global arrays, train, reply with arrays + metrics + id."""
    spec, trainer = _client_process_state(work)
    cid = spec.client_ids[int(context.node_config["partition-id"])]
    states, encoded = _client_data(work, cid)
    trainer.load(msg.content["arrays"].to_torch_state_dict())
    rnd = int(msg.content["config"].get("server-round", 0))
    seed = spec.seed * 100_003 + rnd * 1_009 + spec.client_ids.index(cid)
    loss = trainer.train(states, encoded, replace(spec.train, seed=seed))
    content = RecordDict({
        "arrays": ArrayRecord(trainer.arrays()),
        "metrics": MetricRecord({"num-examples": len(encoded), "train-loss": float(loss)}),
        "client": ConfigRecord({CLIENT_ID_KEY: cid}),
    })
    return Message(content=content, reply_to=msg)


def client_identity(work: str, msg: Message, context: Context) -> Message:
    """Reply to a ``query`` with this node's registered client id (no model is loaded)."""
    cid = WorkSpec.load(Path(work)).client_ids[int(context.node_config["partition-id"])]
    return Message(content=RecordDict({"client": ConfigRecord({CLIENT_ID_KEY: cid})}), reply_to=msg)


def make_client_app(work: str | Path) -> ClientApp:
    """A ClientApp whose `train` handler runs `client_train` on the given work folder; `query` names the client."""
    app = ClientApp()
    work = str(work)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return client_train(work, msg, context)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return client_identity(work, msg, context)

    return app
