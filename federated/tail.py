"""Fast local training on a frozen trunk: only the last k transformer blocks learn.

Design. A causal LM is split at block ``first = L - k``. The trunk (embeddings
and blocks ``0..first-1``) never changes during a federation, so the hidden
states entering block ``first`` are computed ONCE per example
(`trunk_states`) and reused by every client in every round. Training then
runs a *tail model*: the same architecture with ``k`` blocks (and the
original per-layer attention types), fed those states via ``inputs_embeds``.
Its blocks carry the base model's weights of blocks ``first..L-1``; final
norm and (tied) ``lm_head`` are frozen. Logits are computed only at response
positions, so the 49k-row ``lm_head`` costs O(response tokens).

Parameters cross the wire in the BASE model's names
(``model.layers.29.mlp.down_proj.weight``), so round snapshots need no
translation. `to_base_name` / `to_tail_name` map between the two numberings.

LoRA mode wraps the tail with peft. Its factors travel as
``<base module>.lora_A.weight`` / ``.lora_B.weight`` (A: (r, in), B: (out, r)).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from federated.chat import Encoded
from federated.errors import SimulationConfigError

LAYER_RE = re.compile(r"^(model\.layers\.)(\d+)(\..*)$")
LORA_KEY_RE = re.compile(r"^(.*)\.lora_([AB])\.weight$")


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters of one client round."""

    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise SimulationConfigError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise SimulationConfigError(f"learning rate must be > 0, got {self.lr}")


@dataclass(frozen=True)
class LoraSpec:
    """LoRA on `targets` (module suffixes, e.g. ``o_proj``) of every trained block."""

    r: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("o_proj", "gate_proj", "up_proj", "down_proj")

    def __post_init__(self) -> None:
        if self.r < 1 or not self.targets:
            raise SimulationConfigError(f"LoRA needs r >= 1 and at least one target module, got r={self.r}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def n_layers(model: torch.nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def first_trained(model: torch.nn.Module, k: int) -> int:
    total = n_layers(model)
    if not 1 <= k <= total:
        raise SimulationConfigError(f"train_blocks must be in 1..{total} for this model, got {k}")
    return total - k


def to_base_name(name: str, first: int) -> str:
    m = LAYER_RE.match(name)
    return f"{m[1]}{int(m[2]) + first}{m[3]}" if m else name


def to_tail_name(name: str, first: int) -> str:
    m = LAYER_RE.match(name)
    return f"{m[1]}{int(m[2]) - first}{m[3]}" if m else name


def build_tail(base: torch.nn.Module, k: int) -> torch.nn.Module:
    """A k-block copy of `base` holding its last k blocks, final norm and lm_head; all frozen."""
    from transformers import AutoModelForCausalLM

    first = first_trained(base, k)
    cfg = copy.deepcopy(base.config)
    cfg.num_hidden_layers = k
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = list(base.config.layer_types[first:])
    tail = AutoModelForCausalLM.from_config(cfg, dtype=next(base.parameters()).dtype)
    state = {}
    for name, tensor in base.state_dict().items():
        m = LAYER_RE.match(name)
        if m is None or int(m[2]) >= first:
            state[to_tail_name(name, first)] = tensor
    tail.load_state_dict(state, strict=False)
    tail.requires_grad_(False)
    return tail.eval()


def block_param_names(base: torch.nn.Module, k: int) -> list[str]:
    """Base-model names of every parameter in the last k blocks (what full-mode training changes)."""
    first = first_trained(base, k)
    return [n for n, _ in base.named_parameters() if (m := LAYER_RE.match(n)) and int(m[2]) >= first]


class _Stop(Exception):
    pass


@torch.no_grad()
def trunk_states(base: torch.nn.Module, encoded: Sequence[Encoded], k: int, *,
                 batch_size: int = 8) -> list[torch.Tensor]:
    """Hidden states entering block L-k for each example: a list of (T_i, H) tensors.

    A pre-hook on block L-k captures its input and stops the forward pass,
    so the last k blocks and lm_head are never run for the cache.
    """
    first = first_trained(base, k)
    captured: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        captured.append((args[0] if args else kwargs["hidden_states"]).detach())
        raise _Stop

    handle = base.model.layers[first].register_forward_pre_hook(grab, with_kwargs=True)
    out: list[torch.Tensor] = []
    try:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            ids, mask = pad_batch([list(e.ids) for e in chunk], pad_id=0)
            try:
                base(input_ids=ids, attention_mask=mask)
            except _Stop:
                pass
            states = captured.pop()
            out.extend(states[i, :len(e.ids)].clone() for i, e in enumerate(chunk))
    finally:
        handle.remove()
    return out


def pad_batch(seqs: list[list[int]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: ids (B, T) and attention mask (B, T)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (T_i, H) tensors: (B, T, H) and mask (B, T)."""
    width = max(s.shape[0] for s in states)
    out = states[0].new_zeros((len(states), width, states[0].shape[1]))
    mask = torch.zeros((len(states), width), dtype=torch.long)
    for i, s in enumerate(states):
        out[i, :s.shape[0]] = s
        mask[i, :s.shape[0]] = 1
    return out, mask


def response_logits(tail: torch.nn.Module, states: list[torch.Tensor], encoded: Sequence[Encoded]):
    """Logits predicting each response token, (N, V), and the N target ids."""
    h, mask = pad_states(states)
    hidden = tail.model(inputs_embeds=h, attention_mask=mask).last_hidden_state  # (B, T, H)
    rows, cols, targets = [], [], []
    for i, e in enumerate(encoded):
        for t in range(e.prompt_len, len(e.ids)):
            rows.append(i)
            cols.append(t - 1)  # position t-1 predicts token t
            targets.append(e.ids[t])
    logits = tail.lm_head(hidden[rows, cols])  # (N, V)
    cap = getattr(tail.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits, torch.tensor(targets)


def train_tail(tail: torch.nn.Module, params: list[torch.nn.Parameter], states: list[torch.Tensor],
               encoded: Sequence[Encoded], cfg: TrainConfig) -> float:
    """AdamW on `params` for cfg.epochs over the examples; returns the mean loss of the last epoch."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    tail.train()
    losses: list[float] = []
    for _ in range(cfg.epochs):
        losses = []
        for idx in torch.randperm(len(encoded), generator=gen).split(cfg.batch_size):
            logits, targets = response_logits(tail, [states[i] for i in idx], [encoded[i] for i in idx])
            loss = F.cross_entropy(logits, targets)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            losses.append(loss.item())
    tail.eval()
    return sum(losses) / len(losses)
