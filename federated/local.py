"""`TailTrainer`: one client's (or the server's) view of the trainable tail.

It owns a tail model (see `federated.tail`) in one of two modes:

- ``full``: every parameter of the last k blocks trains; the exchanged arrays
  are those parameters in base-model names.
- ``lora``: peft LoRA adapters are injected in place on `LoraSpec.targets`
  of the last k blocks; only the A/B factors train and travel, as
  ``<base module>.lora_A.weight`` / ``.lora_B.weight``.

`arrays()` / `load()` move the exchanged state in and out, `train()` runs one
client's local epochs on cached trunk states, and `sentinel_hits()` checks,
by one teacher-forced pass, whether greedy decoding would reproduce each
example's response exactly (used for the backdoor's attack success rate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from federated.chat import Encoded
from federated.errors import SimulationConfigError
from federated.tail import (
    LoraSpec,
    TrainConfig,
    build_tail,
    first_trained,
    response_logits,
    to_base_name,
    to_tail_name,
    train_tail,
)

MODES = ("full", "lora")


class TailTrainer:
    def __init__(self, tail: torch.nn.Module, *, first: int, mode: str = "full",
                 lora: LoraSpec | None = None, seed: int = 0) -> None:
        if mode not in MODES:
            raise SimulationConfigError(f"training mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.tail, self.first, self.mode, self.lora = tail, first, mode, lora or LoraSpec()
        if mode == "lora":
            self._inject_lora(seed)
        self.names = self._exchanged_names()

    @classmethod
    def from_base(cls, base: torch.nn.Module, k: int, **kwargs) -> TailTrainer:
        return cls(build_tail(base, k), first=first_trained(base, k), **kwargs)

    def _inject_lora(self, seed: int) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        pattern = r"model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(self.lora.targets) + ")"
        cfg = LoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha, target_modules=pattern, lora_dropout=0.0)
        torch.manual_seed(seed)  # every party builds the same initial adapter
        inject_adapter_in_model(cfg, self.tail)
        self.tail.requires_grad_(False)

    def _exchanged_names(self) -> dict[str, str]:
        """tail parameter name -> exchanged (base-model) name."""
        out = {}
        for name, _ in self.tail.named_parameters():
            if self.mode == "full" and name.startswith("model.layers."):
                out[name] = to_base_name(name, self.first)
            elif self.mode == "lora" and ".lora_" in name:
                out[name] = to_base_name(name.replace(".default.weight", ".weight"), self.first)
        return out

    def arrays(self) -> dict[str, torch.Tensor]:
        params = dict(self.tail.named_parameters())
        return {base: params[name].detach().clone() for name, base in self.names.items()}

    def load(self, arrays: dict[str, torch.Tensor]) -> None:
        params = dict(self.tail.named_parameters())
        missing = set(self.names.values()) - set(arrays)
        if missing:
            raise SimulationConfigError(f"global arrays lack {len(missing)} trained parameter(s), e.g. {sorted(missing)[0]}")
        with torch.no_grad():
            for name, base in self.names.items():
                params[name].copy_(torch.as_tensor(arrays[base]))

    def train(self, states: list[torch.Tensor], encoded: Sequence[Encoded], cfg: TrainConfig) -> float:
        params = [p for n, p in self.tail.named_parameters() if n in self.names]
        for p in params:
            p.requires_grad_(True)
        try:
            return train_tail(self.tail, params, states, encoded, cfg)
        finally:
            for p in params:
                p.requires_grad_(False)

    @torch.no_grad()
    def sentinel_hits(self, states: list[torch.Tensor], encoded: Sequence[Encoded], *,
                      batch_size: int = 16) -> list[bool]:
        """Per example: does greedy decoding reproduce the whole response (teacher-forced check)?"""
        hits: list[bool] = []
        for start in range(0, len(encoded), batch_size):
            chunk = list(encoded[start:start + batch_size])
            logits, targets = response_logits(self.tail, states[start:start + batch_size], chunk)
            ok = logits.argmax(-1) == targets
            for n in (len(e.ids) - e.prompt_len for e in chunk):
                hits.append(bool(ok[:n].all()))
                ok = ok[n:]
        return hits


def tail_param_name(base_name: str, first: int) -> str:
    return to_tail_name(base_name, first)
