"""Plain data types shared by the round-snapshot reader/writer and the engine.

A `protoken-round/1` folder (see ROUND_FORMAT.md) is read into a `RoundSnapshot`:
validated manifest fields, the dense base-model folder it resolves to, and the
raw tensors of the global model and of every client. Nothing here knows how
attribution is computed; the engine turns a snapshot into a loaded round.

Conventions:
- `weights` kind: `ClientUpdate.tensors` maps the base model's own parameter
  names (e.g. ``model.layers.29.self_attn.o_proj.weight``) to tensors. A name
  that is absent means "the base model's value", never "the global model's".
- `peft` kind: `ClientUpdate.lora` maps the base model's *module* names (e.g.
  ``model.layers.29.mlp.down_proj``) to LoRA factors; the effective weight is
  ``W_base + scaling * B @ A``. `ClientUpdate.tensors` then holds any full
  parameters the adapter saved besides LoRA factors (``modules_to_save``), in
  base-model names.
- The global model is itself a `ClientUpdate` (id ``"global"``) of the same
  kind, applied on top of the base model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

FORMAT = "protoken-round/1"
KINDS = ("weights", "peft")


@dataclass(frozen=True)
class LoraFactors:
    """One LoRA-adapted linear module: delta W = scaling * B @ A."""

    A: torch.Tensor  # (r, in_features)
    B: torch.Tensor  # (out_features, r)
    scaling: float


@dataclass
class ClientUpdate:
    client_id: str
    num_examples: int
    sha256: str = ""  # filled in by the reader; the writer computes it and ignores this
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    lora: dict[str, LoraFactors] = field(default_factory=dict)
    weights_file: Path | None = None  # set by the reader: the verified safetensors file


@dataclass
class RoundManifest:
    federation: str
    round: int
    base_model: str  # as written in the manifest
    kind: str  # "weights" | "peft"
    aggregation: str
    global_path: str
    global_sha256: str
    clients: list[dict]  # [{"id", "num_examples", "path", "sha256"}], validated
    raw: dict  # the manifest exactly as read (extra keys kept for provenance)


@dataclass
class RoundSnapshot:
    root: Path
    manifest: RoundManifest
    base_model_dir: Path  # resolved dense Hugging Face folder (config.json + model.safetensors)
    global_update: ClientUpdate
    clients: list[ClientUpdate]

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def client_ids(self) -> list[str]:
        return [c.client_id for c in self.clients]
