"""Which modules are tracked, and the hooks that record them on the global model.

A tracked module is one of three kinds:

- ``linear``: an ``nn.Linear`` inside a block (the paper's ``self_attn.o_proj``);
- ``mlp``: a block's gated MLP (``down(act(gate(x)) * up(x))``); its input is
  whatever the block feeds it, i.e. the already-normalised hidden state, so
  Gemma3's extra pre/post feed-forward norms stay outside it, exactly as the
  published hooks on the ``mlp`` submodule see it;
- ``head``: the output embedding (``lm_head``), whose input is the final
  normalised hidden state and whose output gradient is known in closed form
  (`head_gradients`), so it is never hooked by the fast engine.

A module is *local* when the gradient of a token's logit w.r.t. its output is
zero at every position but the token's own: ``lm_head`` and, in the last
block, everything after attention has mixed positions (``o_proj`` and the
MLP). Every other module is *dense*: it needs the gradient at all positions.

`Recorder` is the fast engine's capture. It runs the forward with grad mode on
while no parameter and no input requires grad, so the trunk builds no graph.
Its forward hook records each tracked module's input and, when the output does
not already require grad, swaps it for a detached leaf that does. The first
tracked module in execution order therefore starts the only graph there is,
and later tracked outputs stay differentiable *inside* it, so the gradient
w.r.t. every tracked output still counts every path to the logit (e.g. from
``o_proj`` through the last MLP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .config import AttributionConfig
from .errors import ConfigError, ModuleError

MLP_PARTS = ("gate_proj", "up_proj", "down_proj")
_BLOCK = re.compile(r"^(?P<prefix>.+\.layers)\.(?P<index>\d+)\.(?P<rest>.+)$")


@dataclass(frozen=True)
class TrackedModule:
    name: str  # e.g. "model.layers.29.mlp"
    kind: str  # "linear" | "mlp" | "head"
    local: bool  # gradient only at the token's own position
    parts: tuple[str, ...]  # full names of the nn.Linear layers whose parameters it holds

    def param_names(self) -> list[str]:
        return [f"{part}.{p}" for part in self.parts for p in ("weight", "bias")]


def tracked_names(model: nn.Module, config: AttributionConfig) -> list[str]:
    """The module names a config selects on `model` (explicit list, or the paper's rule)."""
    if config.modules is not None:
        return list(config.modules)
    layers = model.config.num_hidden_layers
    if config.last_n_blocks > layers:
        raise ConfigError(f"last_n_blocks={config.last_n_blocks} but the model has only {layers} blocks")
    from .snapshot import tracked_module_names

    return list(tracked_module_names(model.config, config.last_n_blocks, config.include_lm_head))


def resolve_tracked(model: nn.Module, config: AttributionConfig) -> list[TrackedModule]:
    """Tracked modules in execution order (blocks first, head last), with kind and locality."""
    head_name = _head_name(model)
    last_block = model.config.num_hidden_layers - 1
    found = [_describe(model, name, head_name, last_block) for name in tracked_names(model, config)]
    return sorted(found, key=lambda m: _order_key(model, m))


def _head_name(model: nn.Module) -> str:
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is head:
            return name
    raise ModuleError("the model has no output embedding (lm_head) module")


def _describe(model: nn.Module, name: str, head_name: str, last_block: int) -> TrackedModule:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ModuleError(f"tracked module {name!r} does not exist in {type(model).__name__}") from None
    if name == head_name:
        return TrackedModule(name, "head", True, (name,))
    match = _BLOCK.match(name)
    if match is None:
        raise ModuleError(f"tracked module {name!r} is neither lm_head nor inside a transformer block")
    after_attention = match["rest"] == "self_attn.o_proj" or match["rest"].split(".")[0] == "mlp"
    local = int(match["index"]) == last_block and after_attention
    if isinstance(module, nn.Linear):
        return TrackedModule(name, "linear", local, (name,))
    if _is_gated_mlp(module):
        return TrackedModule(name, "mlp", local, tuple(f"{name}.{p}" for p in MLP_PARTS))
    raise ModuleError(
        f"tracked module {name!r} is a {type(module).__name__}; only nn.Linear layers, gated MLPs "
        "(gate_proj/up_proj/down_proj) and lm_head can be tracked"
    )


def _is_gated_mlp(module: nn.Module) -> bool:
    parts = [getattr(module, p, None) for p in MLP_PARTS]
    return all(isinstance(p, nn.Linear) for p in parts) and callable(getattr(module, "act_fn", None))


def _order_key(model: nn.Module, tracked: TrackedModule) -> tuple[int, int]:
    names = [n for n, _ in model.named_modules()]
    position = names.index(tracked.name)
    return (1 if tracked.kind == "head" else 0, position)


class Recorder:
    """Forward hooks that record tracked inputs and make tracked outputs differentiable.

    Each forward call appends one entry per module: ``inputs[name][i]`` is the
    module's input (1, S, in) detached, ``outputs[name][i]`` its output
    (1, S, out) inside the tail graph.
    """

    def __init__(self, model: nn.Module, modules: list[TrackedModule]):
        self.model = model
        self.modules = [m for m in modules if m.kind != "head"]
        self.inputs: dict[str, list[torch.Tensor]] = {m.name: [] for m in self.modules}
        self.outputs: dict[str, list[torch.Tensor]] = {m.name: [] for m in self.modules}
        self._handles: list = []

    def __enter__(self) -> Recorder:
        for tracked in self.modules:
            module = self.model.get_submodule(tracked.name)
            self._handles.append(module.register_forward_hook(self._hook(tracked.name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module, args, output):
            self.inputs[name].append(args[0].detach())
            if not output.requires_grad:
                output = output.detach().requires_grad_(True)
            self.outputs[name].append(output)
            return output

        return hook

    def last_outputs(self) -> list[torch.Tensor]:
        return [self.outputs[m.name][-1] for m in self.modules]

    def clear_outputs(self) -> None:
        for values in self.outputs.values():
            values.clear()


@dataclass
class HeadGradients:
    """Closed-form gradients at the head for T tokens.

    ``logits``: (T, V) gradient of each token's target w.r.t. the head's output
    (the raw logits before any soft-capping); ``hidden``: (T, d) the same
    pulled back to the head's input (the final normalised hidden state).
    """

    logits: torch.Tensor  # (T, V)
    hidden: torch.Tensor  # (T, d)


def head_gradients(model: nn.Module, hidden: torch.Tensor, chosen: torch.Tensor, target: str) -> HeadGradients:
    """d target(t) / d head output and / d head input, for hidden (T, d) and chosen ids (T,).

    target "logit": the model's output logit of the chosen id (after soft-capping
    if the config has it); "logprob": its log-softmax.
    """
    head = model.get_output_embeddings()
    weight, bias = head.weight, head.bias  # (V, d), (V,)
    cap = getattr(model.config, "final_logit_softcapping", None)
    with torch.no_grad():
        if target == "logit" and cap is None:
            grad = torch.zeros(hidden.shape[0], weight.shape[0], dtype=hidden.dtype, device=hidden.device)
            grad[torch.arange(len(chosen)), chosen] = 1.0
            return HeadGradients(grad, weight[chosen].to(hidden.dtype))
        raw = torch.nn.functional.linear(hidden, weight, bias)  # (T, V)
        grad = _capped_target_gradient(raw, chosen, target, cap).to(hidden.dtype)
        return HeadGradients(grad, grad @ weight)


def _capped_target_gradient(raw: torch.Tensor, chosen: torch.Tensor, target: str, cap) -> torch.Tensor:
    raw = raw.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = raw if cap is None else cap * torch.tanh(raw / cap)
        if target == "logprob":
            # float64: a float32 softmax over a large vocabulary leaves sum(g) ~ 1e-5 instead of 0, which the
            # logits' common offset turns into a visible score error.
            logits = torch.log_softmax(logits.double(), dim=-1)
        picked = logits.gather(1, chosen[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, raw)
    return grad
