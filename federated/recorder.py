"""`RoundRecorder`: a Flower strategy wrapper that records every round as `protoken-round/1`.

Composition, not inheritance: the recorder holds any Message-API strategy
(FedAvg, FedProx, FedAdam, ...) and delegates `configure_train`,
`aggregate_train`, `configure_evaluate`, `aggregate_evaluate` and `summary`
to it. After the inner strategy aggregates a training round, it writes
``<out_dir>/round-NNNN/`` with `attribution.snapshot.write_round`:

- the aggregated global arrays (every parameter that was sent, or
  `global_modules` only), and
- each replying client's arrays, sliced to `client_modules` (the tracked
  modules; None keeps all),

with ``num_examples`` read from the reply's MetricRecord and the client's
registered id from a ConfigRecord key ``client-id`` in the reply (falling
back to ``node-<node id>``). Arrays must use the base model's parameter names;
for ``kind="peft"`` they are LoRA factors named ``<module>.lora_A.weight`` /
``<module>.lora_B.weight``. If a `PlatformTarget` is set, each round folder is
then pushed to the platform; a failed push raises (the folder stays on disk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from attribution.snapshot_types import ClientUpdate, LoraFactors
from federated.errors import SimulationConfigError
from federated.push import PlatformTarget, push_round
from federated.tail import LORA_KEY_RE

CLIENT_ID_KEY = "client-id"


class RoundRecorder(Strategy):
    """Wraps `inner` and writes a round folder after each successful `aggregate_train`."""

    def __init__(self, inner: Strategy, out_dir: str | Path, *, federation: str, base_model: str,
                 kind: str = "weights", client_modules: Sequence[str] | None = None,
                 global_modules: Sequence[str] | None = None, lora_scaling: float | None = None,
                 num_examples_key: str = "num-examples", push: PlatformTarget | None = None,
                 on_round: Callable[[int, Path], None] | None = None) -> None:
        if kind not in ("weights", "peft"):
            raise SimulationConfigError(f"kind must be 'weights' or 'peft', got {kind!r}")
        if kind == "peft" and lora_scaling is None:
            raise SimulationConfigError("kind='peft' needs lora_scaling (alpha / r of the adapters)")
        self.inner, self.out_dir = inner, Path(out_dir)
        self.federation, self.base_model, self.kind = federation, base_model, kind
        self.client_modules, self.global_modules = client_modules, global_modules
        self.lora_scaling, self.num_examples_key = lora_scaling, num_examples_key
        self.push, self.on_round = push, on_round
        self.rounds: list[Path] = []

    def __getattr__(self, name: str):
        # only called for attributes the wrapper lacks: expose the inner strategy's settings
        return getattr(self.__dict__["inner"], name)

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # Read twice (by the inner strategy and by the recorder), and in client-id order: replies
        # arrive in completion order, and a float mean summed in another order differs in its last
        # bits, which later rounds amplify; sorted, a round's global does not depend on timing.
        replies = sorted(replies, key=_reply_order)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is not None:
            self.record(server_round, arrays, [r for r in replies if not r.has_error()])
        return arrays, metrics

    def record(self, server_round: int, arrays: ArrayRecord, replies: list[Message]) -> Path:
        """Write (and optionally push) the round folder for `server_round`."""
        from attribution.snapshot import write_round

        glob = self._update("global", 1, arrays.to_torch_state_dict(), self.global_modules)
        # replies arrive in completion order; sort so a round's manifest does not depend on timing
        clients = sorted((self._client_update(r) for r in replies), key=lambda c: c.client_id)
        path = write_round(self.out_dir / f"round-{server_round:04d}", federation=self.federation,
                           round=server_round, base_model=self.base_model, kind=self.kind,
                           global_update=glob, clients=clients, aggregation=self._aggregation_name())
        self.rounds.append(Path(path))
        if self.push is not None:
            push_round(path, self.push)
        if self.on_round is not None:
            self.on_round(server_round, Path(path))
        return Path(path)

    def _aggregation_name(self) -> str:
        name = type(self.inner).__name__.lower()
        return "fedavg" if name == "fedavg" else name

    def _client_update(self, reply: Message) -> ClientUpdate:
        content = reply.content
        arrays = next(iter(content.array_records.values()))
        num = _num_examples(content, self.num_examples_key)
        return self._update(client_id(reply), num, arrays.to_torch_state_dict(), self.client_modules)

    def _update(self, cid: str, num: int, state: dict[str, torch.Tensor],
                modules: Sequence[str] | None) -> ClientUpdate:
        state = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()
                 if modules is None or _in_modules(k, modules)}
        if self.kind == "weights":
            return ClientUpdate(client_id=cid, num_examples=num, sha256="", tensors=state)
        return ClientUpdate(client_id=cid, num_examples=num, sha256="", lora=lora_factors(state, self.lora_scaling))


def client_id(reply: Message) -> str:
    """The id the client registered in its reply's ConfigRecord, else ``node-<src node id>``."""
    for record in reply.content.config_records.values():
        if CLIENT_ID_KEY in record:
            return str(record[CLIENT_ID_KEY])
    return f"node-{reply.metadata.src_node_id}"


def _reply_order(reply: Message) -> tuple[bool, str]:
    if reply.has_error():
        return (True, f"node-{reply.metadata.src_node_id}")
    return (False, client_id(reply))


def _num_examples(content, key: str) -> int:
    for record in content.metric_records.values():
        if key in record:
            value = int(record[key])
            if value < 1:
                raise SimulationConfigError(f"a client reported {key}={value}; it must be >= 1")
            return value
    raise SimulationConfigError(f"a client reply has no {key!r} in its MetricRecord")


def _in_modules(param: str, modules: Sequence[str]) -> bool:
    return any(param == m or param.startswith(m + ".") for m in modules)


def lora_factors(state: dict[str, torch.Tensor], scaling: float) -> dict[str, LoraFactors]:
    """Group ``<module>.lora_A.weight`` / ``.lora_B.weight`` arrays into `LoraFactors` per module."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        m = LORA_KEY_RE.match(key)
        if m is None:
            raise SimulationConfigError(f"array {key!r} is not a LoRA factor (<module>.lora_A|B.weight)")
        parts.setdefault(m[1], {})[m[2]] = tensor
    missing = [mod for mod, ab in parts.items() if set(ab) != {"A", "B"}]
    if missing:
        raise SimulationConfigError(f"LoRA module(s) without both A and B factors: {', '.join(missing)}")
    return {mod: LoraFactors(A=ab["A"], B=ab["B"], scaling=float(scaling)) for mod, ab in parts.items()}
