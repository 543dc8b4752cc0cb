"""The fast engine: the reference's numbers from one teacher-forced pass.

Teacher forcing over prompt + response (minus its last token) gives, at
position p_t = len(prompt) - 1 + t, the logits that choose response token t.
One forward pass runs with grad mode on but nothing requiring grad, so the
trunk builds no graph; `capture.Recorder` records the tracked modules' inputs
and starts the graph at the first tracked output. The head's gradient is
closed-form (`capture.head_gradients`), so the backward starts at the final
hidden state with g_h = d target / d h for every token at once.

- Only local modules (the paper's default, N = 1): nothing after the last
  block's o_proj mixes positions, so the gradient of token t's target w.r.t. a
  local module's output is zero except at p_t, and one backward of
  sum_t target(t) yields every token's gradient at its own position.
- Dense modules (N >= 2): token t's gradient is needed at all positions, so
  the backward is batched over tokens (`is_grads_batched`, one vmapped pass
  through the tail blocks only), falling back to a loop over tokens.

The client side is `clients.stream_scores`. `attribute_traces` lets several
(prompt, response) items share one pass over the clients when every tracked
module is local: their traces are concatenated along the token axis.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import torch

from .capture import Recorder, TrackedModule, head_gradients
from .clients import ModuleTrace, stream_scores
from .config import AttributionConfig
from .errors import InputError
from .result import AttributionResult, build_result


def check_ids(loaded, ids, name: str) -> list[int]:
    """A non-empty list of ints inside the vocabulary, or InputError naming `name`."""
    if isinstance(ids, torch.Tensor):
        ids = ids.flatten().tolist()
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise InputError(f"{name} must be a list of token ids, got {type(ids).__name__}")
    if len(ids) == 0:
        raise InputError(f"{name} is empty; give at least one token")
    vocab = loaded.model.get_input_embeddings().num_embeddings
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab:
            raise InputError(f"{name} holds {token!r}, which is not a token id in 0..{vocab - 1}")
    return list(ids)


def check_length(loaded, length: int) -> None:
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise InputError(f"prompt + response is {length} tokens; the model takes at most {limit}")


def eos_ids(loaded) -> set[int]:
    """Token ids that end a generation (generation config, else the tokenizer's EOS)."""
    value = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    if value is None and loaded.tokenizer is not None:
        value = loaded.tokenizer.eos_token_id
    if value is None:
        return set()
    return set(value) if isinstance(value, list | tuple) else {int(value)}


# ---------------------------------------------------------------- teacher-forced traces


def trace_teacher_forced(loaded, prompt: list[int], response: list[int], modules: list[TrackedModule],
                         config: AttributionConfig) -> dict[str, ModuleTrace]:
    """Record every tracked module's inputs and per-token output gradients in one pass."""
    model = loaded.model
    positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(response), device=model.device)
    chosen = torch.tensor(response, device=model.device)
    ids = torch.tensor([prompt + response[:-1]], device=model.device)
    grad_mode = torch.enable_grad() if config.gradient_weighting else torch.no_grad()
    with Recorder(model, modules) as recorder, grad_mode:
        hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state[0, positions]  # (T, d)
    head = head_gradients(model, hidden.detach(), chosen, config.target)
    blocks = recorder.modules
    if not config.gradient_weighting:
        return _ones_traces(recorder, modules, hidden.detach(), positions, model)
    if all(m.local for m in blocks):
        grads = _local_grads(hidden, recorder.last_outputs(), head.hidden, positions)
    else:
        grads = _per_token_grads(hidden, recorder.last_outputs(), head.hidden, positions)
    traces = {m.name: _block_trace(m, recorder.inputs[m.name][0][0], g, positions) for m, g in zip(blocks, grads,
                                                                                                   strict=True)}
    traces.update(_head_trace(modules, hidden.detach(), head.logits))
    return traces


def _local_grads(hidden, outputs, g_hidden, positions) -> list[torch.Tensor]:
    """One backward of sum_t target(t): local gradients (T, out) at each token's own position."""
    if not outputs:
        return []
    grads = torch.autograd.grad(hidden, outputs, grad_outputs=g_hidden, allow_unused=True)
    return [_or_zeros(g, o)[0, positions] for g, o in zip(grads, outputs, strict=True)]


def _per_token_grads(hidden, outputs, g_hidden, positions) -> list[torch.Tensor]:
    """Each token's gradient at every position: (T, P, out) per module, through the tail only."""
    tokens = hidden.shape[0]
    batched = torch.zeros(tokens, *hidden.shape, dtype=hidden.dtype, device=hidden.device)
    batched[torch.arange(tokens), torch.arange(tokens)] = g_hidden  # token t's seed only on its own row
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's "falling back to a slow path" notices
            grads = torch.autograd.grad(hidden, outputs, grad_outputs=batched, is_grads_batched=True,
                                        allow_unused=True, retain_graph=True)
        return [_or_zeros(g, o, batch=tokens)[:, 0] for g, o in zip(grads, outputs, strict=True)]
    except (RuntimeError, NotImplementedError):
        return _per_token_loop(hidden, outputs, batched)


def _per_token_loop(hidden, outputs, batched) -> list[torch.Tensor]:
    per_token = [torch.autograd.grad(hidden, outputs, grad_outputs=seed, allow_unused=True, retain_graph=True)
                 for seed in batched]
    return [torch.stack([_or_zeros(step[i], o)[0] for step in per_token]) for i, o in enumerate(outputs)]


def _or_zeros(grad, output, batch: int | None = None) -> torch.Tensor:
    if grad is not None:
        return grad
    shape = output.shape if batch is None else (batch, *output.shape)
    return torch.zeros(shape, dtype=output.dtype, device=output.device)


def _block_trace(module: TrackedModule, inputs: torch.Tensor, grads: torch.Tensor, positions) -> ModuleTrace:
    """inputs: (P, in) at all positions; grads: local (T, out) or per-token (T, P, out)."""
    if module.local:
        if grads.dim() == 3:  # from a per-token pass: keep each token's own position
            grads = grads[torch.arange(len(positions)), positions]
        return ModuleTrace(inputs[positions], grads, local=True)
    return ModuleTrace(inputs, grads, local=False)


def _head_trace(modules, hidden: torch.Tensor, head_grads: torch.Tensor) -> dict[str, ModuleTrace]:
    return {m.name: ModuleTrace(hidden, head_grads, local=True) for m in modules if m.kind == "head"}


def _ones_traces(recorder, modules, hidden, positions, model) -> dict[str, ModuleTrace]:
    """The gradient-weighting ablation: g = ones at each token's own position, for every module."""
    traces = {}
    for m in recorder.modules:
        inputs = recorder.inputs[m.name][0][0, positions]
        out_features = recorder.outputs[m.name][0].shape[-1]
        traces[m.name] = ModuleTrace(inputs, inputs.new_ones(len(positions), out_features), local=True)
    vocab = model.get_output_embeddings().weight.shape[0]
    traces.update(_head_trace(modules, hidden, hidden.new_ones(len(positions), vocab)))
    return traces


# ---------------------------------------------------------------- scoring


def restrict_head(traces: dict[str, ModuleTrace], modules: list[TrackedModule]) -> dict[str, ModuleTrace]:
    """Keep only the vocabulary rows where some token's head gradient is non-zero."""
    out = dict(traces)
    for m in modules:
        if m.kind != "head":
            continue
        grads = traces[m.name].grads
        rows = (grads != 0).any(dim=0).nonzero().squeeze(1)
        if len(rows) < grads.shape[1]:
            out[m.name] = ModuleTrace(traces[m.name].inputs, grads[:, rows], local=True, rows=rows)
    return out


def score_traces(loaded, traces: dict[str, ModuleTrace], modules: list[TrackedModule],
                 config: AttributionConfig, progress=None) -> torch.Tensor:
    """Token scores (T, K) of every client for recorded traces."""
    return stream_scores(loaded, modules, restrict_head(traces, modules), chunk_size=config.client_chunk_size,
                         progress=progress)


def teacher_forced_attribute(loaded, prompt_ids, response_ids, *, config: AttributionConfig | None = None,
                             progress=None) -> AttributionResult:
    """Attribute a given response to the clients, by teacher forcing (one pass)."""
    config = config or loaded.config
    prompt = check_ids(loaded, prompt_ids, "prompt_ids")
    response = check_ids(loaded, response_ids, "response_ids")
    return _attribute_known(loaded, prompt, response, config, "teacher_forced", progress)


def _attribute_known(loaded, prompt, response, config, mode: str, progress, timings=None) -> AttributionResult:
    check_length(loaded, len(prompt) + len(response))
    modules = loaded.tracked(config)
    timings = dict(timings or {})
    started = time.perf_counter()
    traces = trace_teacher_forced(loaded, prompt, response, modules, config)
    timings["trace_s"] = time.perf_counter() - started
    started = time.perf_counter()
    scores = score_traces(loaded, traces, modules, config, progress)
    timings["clients_s"] = time.perf_counter() - started
    return build_result(loaded, prompt_ids=prompt, response_ids=response, raw_scores=scores, config=config,
                        mode=mode, engine="fast", tracked=[m.name for m in modules], timings=timings)


def attribute_traces(loaded, items: list[tuple[list[int], list[int], dict[str, ModuleTrace]]],
                     config: AttributionConfig, progress=None) -> list[torch.Tensor]:
    """Token scores of several items; one pass over the clients when every module is local."""
    modules = loaded.tracked(config)
    if len(items) < 2 or not all(t.local for _, _, traces in items for t in traces.values()):
        return [score_traces(loaded, traces, modules, config, progress) for _, _, traces in items]
    merged = {m.name: ModuleTrace(torch.cat([traces[m.name].inputs for _, _, traces in items]),
                                  torch.cat([traces[m.name].grads for _, _, traces in items]), local=True)
              for m in modules}
    scores = score_traces(loaded, merged, modules, config, progress)
    return list(scores.split([len(response) for _, response, _ in items]))
