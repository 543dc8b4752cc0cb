"""The published ProToken algorithm, token by token: the test oracle.

Kept small and literal, never optimised. For each response token t:

1. run the *whole* global model on the prefix (prompt + tokens before t)
   with no KV cache; forward hooks on the tracked modules record each
   module's input, and tensor hooks on their outputs record the gradient;
2. choose x (greedy argmax, or the given response token when teacher
   forcing) and back-propagate the target (raw logit ``logits[-1, x]``, or
   its log-softmax) through the whole model: the embedding output is made a
   leaf that requires grad, so every block is part of the backward pass;
3. for each client i and tracked module m, run the module with client i's
   parameters (`torch.func.functional_call`: base value where the client has
   none, plus ``B @ A`` times scaling for LoRA) on the recorded input at every
   position, and take <o_i, g> summed over positions and output neurons;
4. S_i(t) = sum over modules.

With ``gradient_weighting=False`` step 2 is skipped and g is ones at the
token's position, zeros elsewhere (the paper's ablation).
"""

from __future__ import annotations

import time

import torch
from torch.func import functional_call

from .config import AttributionConfig
from .errors import InputError
from .result import AttributionResult, build_result


def reference_attribute(loaded, prompt_ids, *, max_new_tokens: int | None = None, response_ids=None,
                        config: AttributionConfig | None = None, eos: bool = True) -> AttributionResult:
    """Attribute a greedy generation (or, with `response_ids`, a teacher-forced response)."""
    from .fast import check_ids, eos_ids

    config = config or loaded.config
    started = time.perf_counter()
    prompt = check_ids(loaded, prompt_ids, "prompt_ids")
    forced = check_ids(loaded, response_ids, "response_ids") if response_ids is not None else None
    steps = len(forced) if forced is not None else _steps(max_new_tokens)
    modules = loaded.tracked(config)
    clients = [_client_params(loaded, i, modules) for i in range(loaded.num_clients)]
    stop = eos_ids(loaded) if eos and forced is None else set()
    ids, rows = list(prompt), []
    for step in range(steps):
        inputs, grads, chosen = _run_global(loaded.model, modules, ids, forced[step] if forced else None, config)
        rows.append([sum(_dot(loaded.model, m.name, params[m.name], inputs[m.name], grads[m.name])
                         for m in modules) for params in clients])
        ids.append(chosen)
        if chosen in stop:
            break
    scores = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), loaded.num_clients)
    mode = "teacher_forced" if forced is not None else "generated"
    timings = {"total_s": time.perf_counter() - started}
    return build_result(loaded, prompt_ids=prompt, response_ids=ids[len(prompt):], raw_scores=scores,
                        config=config, mode=mode, engine="reference", tracked=[m.name for m in modules],
                        timings=timings)


def _steps(max_new_tokens) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    return max_new_tokens


def _run_global(model, modules, ids: list[int], forced: int | None, config: AttributionConfig):
    """One full forward (and backward) of the global model on `ids`; returns inputs, grads, chosen id."""
    inputs, grads, handles = {}, {}, []

    def record(name):
        def hook(module, args, output):
            inputs[name] = args[0].detach()[0]  # (P, in)
            if output.requires_grad:
                output.register_hook(lambda g: grads.__setitem__(name, g.detach()[0]))  # (P, out)

        return hook

    def leaf(module, args, output):  # the backward must run through every block
        return output.detach().requires_grad_(True)

    handles.append(model.get_input_embeddings().register_forward_hook(leaf))
    handles += [model.get_submodule(m.name).register_forward_hook(record(m.name)) for m in modules]
    try:
        with torch.enable_grad():
            logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
            chosen = int(logits[-1].argmax()) if forced is None else forced
            if config.gradient_weighting:
                _target(logits[-1], chosen, config.target).backward()
    finally:
        for handle in handles:
            handle.remove()
    if not config.gradient_weighting:
        grads = {m.name: _ones_at_last(inputs, model, m.name) for m in modules}
    return inputs, grads, chosen


def _target(logits: torch.Tensor, chosen: int, target: str) -> torch.Tensor:
    if target == "logprob":
        return torch.log_softmax(logits.double(), dim=-1)[chosen]  # float64 softmax: sum(g) stays 0
    return logits[chosen]


def _ones_at_last(inputs: dict, model, name: str) -> torch.Tensor:
    """The ablation's g: ones over the token's own (last) position, zeros elsewhere."""
    positions = inputs[name].shape[0]
    with torch.no_grad():
        out = model.get_submodule(name)(inputs[name][None])[0]
    grad = torch.zeros_like(out)
    grad[positions - 1] = 1.0
    return grad


def _client_params(loaded, index: int, modules) -> dict[str, dict[str, torch.Tensor]]:
    """Client `index`'s full parameters of every tracked module, by module-local name."""
    out = {}
    for m in modules:
        values = loaded.source.params(index, list(m.parts), {})
        params = {}
        for part in m.parts:
            local = part[len(m.name) + 1:] + "." if part != m.name else ""
            entry = values[part]
            base_w, base_b = loaded.base_linear(part, None)
            weight = entry.weight.to(base_w) if entry.weight is not None else base_w
            if entry.lora_a is not None:
                weight = weight + entry.lora_b.to(base_w) @ entry.lora_a.to(base_w)
            params[local + "weight"] = weight
            bias = entry.bias.to(base_w) if entry.bias is not None else base_b
            if bias is not None:
                params[local + "bias"] = bias
        out[m.name] = params
    return out


def _dot(model, name: str, params: dict, inputs: torch.Tensor, grads: torch.Tensor) -> float:
    """<client module(input), g>, summed over every position and output neuron."""
    with torch.no_grad():
        out = functional_call(model.get_submodule(name), params, (inputs[None],))[0]  # (P, out)
        return float((out.double() * grads.double()).sum())
