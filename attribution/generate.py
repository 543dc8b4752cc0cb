"""Greedy generation that records what attribution needs as it goes.

`generate_and_attribute` runs its own greedy loop with a KV cache over the
base model (the decoder without the head). At every step the new position's
tracked inputs are recorded by `capture.Recorder`; the head is applied by
hand (logits for the argmax, then the closed-form head gradient), and a tiny
backward from the new position's final hidden state through the tail only
(the last block after o_proj, and the final norm) gives the new position's
output gradients. The trunk builds no graph: nothing upstream of the first
tracked output requires grad, and the KV cache holds plain tensors. When the
loop ends, every token's inputs and gradients are there, so attribution needs
no second forward pass; the clients are scored in one streamed contraction.

Dense modules (N >= 2 blocks) need each token's gradient at *every* earlier
position, which a cached step cannot provide; then the response is generated
by the plain greedy loop and attributed by the teacher-forced engine over the
generated ids (same tokens, same numbers, one extra forward pass).
"""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache

from .capture import Recorder, head_gradients
from .clients import ModuleTrace
from .config import AttributionConfig
from .errors import InputError
from .fast import _attribute_known, check_ids, check_length, eos_ids, score_traces
from .result import AttributionResult, build_result


def generate_and_attribute(loaded, prompt_ids, *, max_new_tokens: int = 32, config: AttributionConfig | None = None,
                           eos: bool = True, progress=None) -> AttributionResult:
    """Greedy-generate up to `max_new_tokens` (stopping after EOS) and attribute every token."""
    config = config or loaded.config
    prompt = check_ids(loaded, prompt_ids, "prompt_ids")
    steps = check_max_new_tokens(max_new_tokens)
    check_length(loaded, len(prompt) + steps)
    modules = loaded.tracked(config)
    started = time.perf_counter()
    if not all(m.local for m in modules):
        response = greedy_generate(loaded, prompt, steps, eos=eos, progress=progress)
        timings = {"generate_s": time.perf_counter() - started}
        return _attribute_known(loaded, prompt, response, config, "generated", progress, timings)
    response, traces = _generate_recording(loaded, prompt, steps, modules, config, eos, progress)
    timings = {"generate_s": time.perf_counter() - started}
    started = time.perf_counter()
    scores = score_traces(loaded, traces, modules, config, progress)
    timings["clients_s"] = time.perf_counter() - started
    return build_result(loaded, prompt_ids=prompt, response_ids=response, raw_scores=scores, config=config,
                        mode="generated", engine="fast", tracked=[m.name for m in modules], timings=timings)


def check_max_new_tokens(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1, got {value!r}")
    return value


def _head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    head = model.get_output_embeddings()
    with torch.no_grad():
        return torch.nn.functional.linear(hidden, head.weight, head.bias)


@torch.no_grad()
def greedy_generate(loaded, prompt: list[int], steps: int, *, eos: bool = True, progress=None) -> list[int]:
    """Plain greedy decoding with a KV cache (argmax of the raw logits)."""
    model, stop = loaded.model, eos_ids(loaded) if eos else set()
    cache, step_ids, response = DynamicCache(config=model.config), torch.tensor([prompt], device=model.device), []
    for _ in range(steps):
        hidden = model.base_model(input_ids=step_ids, cache=cache, use_cache=True).last_hidden_state[0, -1]
        response.append(int(_head_logits(model, hidden).argmax()))
        _tick(progress, steps)
        if response[-1] in stop:
            break
        step_ids = torch.tensor([[response[-1]]], device=model.device)
    return response


def _tick(progress, steps: int) -> None:
    if progress is not None:
        progress("generate", 1, steps)


def _generate_recording(loaded, prompt, steps, modules, config, eos, progress):
    """Greedy decoding that keeps, per step, each tracked input and output gradient at the new position."""
    model, stop = loaded.model, eos_ids(loaded) if eos else set()
    cache, step_ids = DynamicCache(config=model.config), torch.tensor([prompt], device=model.device)
    response, rows = [], {m.name: ([], []) for m in modules}
    with Recorder(model, modules) as recorder:
        for _ in range(steps):
            chosen = _step(model, recorder, step_ids, cache, config, modules, rows)
            response.append(chosen)
            _tick(progress, steps)
            if chosen in stop:
                break
            step_ids = torch.tensor([[chosen]], device=model.device)
    return response, {name: ModuleTrace(torch.stack(h), torch.stack(g), local=True) for name, (h, g) in rows.items()}


def _step(model, recorder: Recorder, step_ids, cache, config: AttributionConfig, modules, rows) -> int:
    grad_mode = torch.enable_grad() if config.gradient_weighting else torch.no_grad()
    with grad_mode:
        hidden = model.base_model(input_ids=step_ids, cache=cache, use_cache=True).last_hidden_state[0, -1]  # (d,)
    chosen = int(_head_logits(model, hidden.detach()).argmax())
    head = head_gradients(model, hidden.detach()[None], torch.tensor([chosen], device=hidden.device), config.target)
    outputs = recorder.last_outputs()
    if config.gradient_weighting and outputs:
        grads = torch.autograd.grad(hidden, outputs, grad_outputs=head.hidden[0], allow_unused=True)
        grads = [g[0, -1] if g is not None else o.new_zeros(o.shape[-1]) for g, o in zip(grads, outputs, strict=True)]
    else:
        grads = [o.new_ones(o.shape[-1]) for o in outputs]
    for m, grad in zip(recorder.modules, grads, strict=True):
        rows[m.name][0].append(recorder.inputs[m.name][-1][0, -1])
        rows[m.name][1].append(grad.detach())
    for m in modules:
        if m.kind == "head":
            head_grad = head.logits[0] if config.gradient_weighting else torch.ones_like(head.logits[0])
            rows[m.name][0].append(hidden.detach())
            rows[m.name][1].append(head_grad)
    _forget(recorder)
    return chosen


def _forget(recorder: Recorder) -> None:
    """Drop the step's recorded tensors (the rows kept are copies by indexing)."""
    for values in recorder.inputs.values():
        values.clear()
    recorder.clear_outputs()
