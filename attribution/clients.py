"""Batched, streamed evaluation of the clients' tracked modules.

Given what the global model recorded for T tokens (each tracked module's
input h and the gradient g of each token's target w.r.t. its output), client
i's token score is S_i(t) = sum_m <m_i(h), g_t>, summed over positions and
output neurons. Clients are processed in chunks of C; per chunk every Linear
layer of every tracked module is one `LinearChunk` (a shared base weight plus,
per client, an optional full weight, bias and LoRA pair), and each module's
scores for the whole chunk come out of a few `einsum` contractions. Only one
chunk of client tensors exists at a time, so memory is O(C), not O(K).

Two recorded layouts (see `ModuleTrace`):

- local (last block after attention, and lm_head): h (T, in), g (T, out), the
  token's own position only, because every other position has g = 0;
- dense (earlier blocks, N >= 2): h (P, in) at every position, g (T, P, out).

The contractions avoid work that does not depend on the client:

- a Linear layer whose clients all use the base weight reduces to one dot
  product shared by the chunk;
- a LoRA client adds s * (g^T B_i)(A_i h): O(r * d) per position;
- the last Linear of a module (``down_proj``, ``o_proj``, ``lm_head``) is
  scored as <W^T g, x_i> when only its input differs per client, with W^T g
  computed once per chunk;
- ``lm_head`` arrives restricted to the vocabulary rows where g is non-zero
  (the chosen tokens' rows for the raw-logit target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class ModuleTrace:
    """What the global model recorded at one tracked module for T tokens."""

    inputs: torch.Tensor  # local: (T, in); dense: (P, in)
    grads: torch.Tensor  # local: (T, out); dense: (T, P, out)
    local: bool
    rows: torch.Tensor | None = None  # head only: vocabulary rows kept in `grads` (R,), None = all


@dataclass
class LinearChunk:
    """One Linear layer's parameters for a chunk of C clients (None = the base model's value)."""

    base_weight: torch.Tensor  # (out, in)
    base_bias: torch.Tensor | None  # (out,)
    weight: torch.Tensor | None = None  # (C, out, in), full per-client weights
    bias: torch.Tensor | None = None  # (C, out)
    lora_a: torch.Tensor | None = None  # (C, r, in)
    lora_b: torch.Tensor | None = None  # (C, out, r), scaling already applied
    size: int = 1

    @property
    def is_base(self) -> bool:
        return self.weight is None and self.bias is None and self.lora_a is None


def contract(out: torch.Tensor, grads: torch.Tensor, local: bool) -> torch.Tensor:
    """<out, g> over positions and neurons: out (C, T|P, o), g (T, o) | (T, P, o) -> (C, T).

    Accumulated in float64: with the log-prob target the head's g spans the whole
    vocabulary and nearly cancels against the logits' common offset, so a float32
    sum over ~50k terms would be off by ~1e-3.
    """
    out, grads = out.double(), grads.double()
    return torch.einsum("cto,to->ct", out, grads) if local else torch.einsum("cpo,tpo->ct", out, grads)


def apply_linear(lin: LinearChunk, x: torch.Tensor) -> torch.Tensor:
    """Each client's layer on x: shared (P, in) or per-client (C, P, in) -> (C, P, out)."""
    shared = x.dim() == 2
    if lin.weight is not None:
        out = torch.einsum("pi,coi->cpo" if shared else "cpi,coi->cpo", x, lin.weight)
    else:
        out = x @ lin.base_weight.T
        out = out.expand(lin.size, *out.shape) if shared else out
    bias = lin.bias[:, None, :] if lin.bias is not None else lin.base_bias
    if bias is not None:
        out = out + bias
    if lin.lora_a is not None:
        ax = torch.einsum("pi,cri->cpr" if shared else "cpi,cri->cpr", x, lin.lora_a)
        out = out + torch.einsum("cpr,cor->cpo", ax, lin.lora_b)
    return out


def score_linear(lin: LinearChunk, x: torch.Tensor, grads: torch.Tensor, local: bool) -> torch.Tensor:
    """Token scores (C, T) of each client's layer applied to x against g."""
    if lin.weight is not None:
        return contract(apply_linear(lin, x), grads, local)
    scores = _base_weight_score(lin, x, grads, local) + _bias_score(lin, grads, local)
    if lin.lora_a is not None:
        scores = scores + _lora_score(lin, x, grads, local)
    return scores.expand(lin.size, -1)


def _base_weight_score(lin: LinearChunk, x: torch.Tensor, grads: torch.Tensor, local: bool) -> torch.Tensor:
    if x.dim() == 2:  # the same input for every client: one shared dot product
        return contract((x @ lin.base_weight.T)[None], grads, local)
    pulled = grads @ lin.base_weight  # W^T g, once per chunk: (T, in) | (T, P, in)
    return torch.einsum("cti,ti->ct", x, pulled) if local else torch.einsum("cpi,tpi->ct", x, pulled)


def _bias_score(lin: LinearChunk, grads: torch.Tensor, local: bool) -> torch.Tensor:
    bias = lin.bias if lin.bias is not None else lin.base_bias
    if bias is None:
        return torch.zeros((), dtype=grads.dtype, device=grads.device)
    per_token = grads if local else grads.sum(dim=1)  # (T, out): a bias is added at every position
    if bias.dim() == 2:
        return torch.einsum("co,to->ct", bias, per_token)
    return (per_token @ bias)[None]


def _lora_score(lin: LinearChunk, x: torch.Tensor, grads: torch.Tensor, local: bool) -> torch.Tensor:
    ax = torch.einsum("pi,cri->cpr" if x.dim() == 2 else "cpi,cri->cpr", x, lin.lora_a)  # (C, P, r)
    if local:
        gb = torch.einsum("to,cor->ctr", grads, lin.lora_b)
        return (ax * gb).sum(-1)
    gb = torch.einsum("tpo,cor->ctpr", grads, lin.lora_b)
    return torch.einsum("cpr,ctpr->ct", ax, gb)


def score_mlp(parts: tuple[LinearChunk, LinearChunk, LinearChunk], act: Callable, x: torch.Tensor,
              grads: torch.Tensor, local: bool) -> torch.Tensor:
    """Token scores (C, T) of each client's gated MLP down(act(gate(x)) * up(x))."""
    gate, up, down = parts
    if gate.is_base and up.is_base:  # the hidden activation is shared by the chunk
        hidden = act(x @ gate.base_weight.T + _zero_if_none(gate.base_bias)) * (
            x @ up.base_weight.T + _zero_if_none(up.base_bias)
        )
    else:
        hidden = act(apply_linear(gate, x)) * apply_linear(up, x)  # (C, P, I)
    return score_linear(down, hidden, grads, local)


def _zero_if_none(bias: torch.Tensor | None):
    return 0.0 if bias is None else bias


@dataclass
class ClientLinear:
    """One client's values for one Linear layer; None means the base model's value."""

    weight: torch.Tensor | None = None  # (out, in), or (R, in) when restricted to rows
    bias: torch.Tensor | None = None  # (out,)
    lora_a: torch.Tensor | None = None  # (r, in)
    lora_b: torch.Tensor | None = None  # (out, r), scaling applied

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.weight, self.bias, self.lora_a, self.lora_b)
                   if t is not None)


def stack_linear(base_weight: torch.Tensor, base_bias: torch.Tensor | None,
                 entries: list[ClientLinear]) -> LinearChunk:
    """Stack C clients' values of one layer; a client without its own value gets the base one."""
    device, dtype = base_weight.device, base_weight.dtype

    def stacked(values, fallback):
        if all(v is None for v in values):
            return None
        return torch.stack([(v if v is not None else fallback).to(device, dtype) for v in values])

    zero_bias = torch.zeros(base_weight.shape[0], device=device, dtype=dtype)
    chunk = LinearChunk(
        base_weight, base_bias, size=len(entries),
        weight=stacked([e.weight for e in entries], base_weight),
        bias=stacked([e.bias for e in entries], base_bias if base_bias is not None else zero_bias),
    )
    if any(e.lora_a is not None for e in entries):
        chunk.lora_a, chunk.lora_b = _stack_lora(entries, base_weight)
    return chunk


def _stack_lora(entries: list[ClientLinear], base_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad every client's LoRA pair to the chunk's largest rank with zeros (no LoRA = rank 0)."""
    rank = max(e.lora_a.shape[0] for e in entries if e.lora_a is not None)
    out_features, in_features = base_weight.shape
    a = base_weight.new_zeros(len(entries), rank, in_features)
    b = base_weight.new_zeros(len(entries), out_features, rank)
    for i, e in enumerate(entries):
        if e.lora_a is not None:
            r = e.lora_a.shape[0]
            a[i, :r] = e.lora_a.to(a.device, a.dtype)
            b[i, :, :r] = e.lora_b.to(b.device, b.dtype)
    return a, b


CHUNK_BYTES_BUDGET = 512 * 2**20  # client tensors held at once, whatever client_chunk_size says


def stream_scores(loaded, modules, traces: dict[str, ModuleTrace], *, chunk_size: int,
                  progress: Callable[[str, int, int], None] | None = None) -> torch.Tensor:
    """Token scores (T, K) of every client, loading and scoring one chunk of clients at a time.

    `progress(stage, done_now, total)` is called after each chunk.
    """
    rows = {m.parts[0]: traces[m.name].rows for m in modules if m.kind == "head"}
    parts = [part for m in modules for part in m.parts]
    base = {part: loaded.base_linear(part, rows.get(part)) for part in parts}
    tokens = next(iter(traces.values())).grads.shape[0]
    scores = torch.zeros(tokens, loaded.num_clients, dtype=torch.float64)
    size = _chunk_size(loaded.source.client_nbytes(parts, rows), chunk_size)
    for start in range(0, loaded.num_clients, size):
        indices = list(range(start, min(loaded.num_clients, start + size)))
        values = [loaded.source.params(i, parts, rows) for i in indices]
        for module in modules:
            chunks = [stack_linear(*base[part], [v[part] for v in values]) for part in module.parts]
            scores[:, indices] += score_module(loaded, module, chunks, traces[module.name]).T.double().cpu()
        del values
        if progress is not None:
            progress("clients", len(indices), loaded.num_clients)
    return scores


def _chunk_size(client_nbytes: int, requested: int) -> int:
    return max(1, min(requested, CHUNK_BYTES_BUDGET // max(client_nbytes, 1)))


def score_module(loaded, module, chunks: list[LinearChunk], trace: ModuleTrace) -> torch.Tensor:
    """(C, T) scores of one tracked module for one chunk."""
    if module.kind == "mlp":
        act = loaded.model.get_submodule(module.name).act_fn
        return score_mlp(tuple(chunks), act, trace.inputs, trace.grads, trace.local)
    return score_linear(chunks[0], trace.inputs, trace.grads, trace.local)
