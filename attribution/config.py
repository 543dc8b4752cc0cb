"""Options of one attribution run, validated once in `__post_init__`.

The defaults are the published ProToken method (DESIGN.md, "The method"):
the last block's `self_attn.o_proj` and `mlp` plus `lm_head`, the gradient of
the raw logit of the chosen token, gradient weighting on, no FedAvg weights,
and the raw sum of token scores as the sequence score.

Options beyond the paper:

- `last_n_blocks` / `include_lm_head` widen or narrow the tracked selection;
  `modules` names the tracked modules explicitly instead (each a Linear layer,
  a block's `mlp`, or `lm_head`; none may contain another).
- `target="logprob"` differentiates log p(x | prefix) instead of the raw logit.
- `gradient_weighting=False` is the paper's ablation: the gradient g is
  replaced by a tensor of ones at the token's own position and zeros
  elsewhere, so a client's token score is the plain sum of its tracked
  modules' outputs (every output neuron) at that position.
- `apply_fedavg_weights=True` multiplies client i's token scores by
  rho_i = n_i / sum_j n_j.
- `aggregation` turns token scores [T, K] into sequence scores [K]:
  `sum` (published) adds them; `zscore` standardises each token's scores
  over clients (mean 0, std 1; a token whose scores are all equal gives
  zeros) and adds those, so every token is one vote of equal weight;
  `share` turns each token's scores into softmax shares and adds them
  (sequence shares are then their mean, not a softmax).
- `responsible_margin` parameterises the responsible-set rule
  (see `attribution.responsible`).

`client_chunk_size`, `device` and `dtype` decide how the numbers are computed,
not which numbers: `config_hash()` leaves out the chunk size and the device
(results are invariant to both up to float rounding) and covers the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

import torch

from .errors import ConfigError

TARGETS = ("logit", "logprob")
AGGREGATIONS = ("sum", "zscore", "share")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_RESPONSIBLE_MARGIN = 0.5
_EXECUTION_ONLY = ("client_chunk_size", "device")


@dataclass(frozen=True)
class AttributionConfig:
    last_n_blocks: int = 1
    include_lm_head: bool = True
    modules: tuple[str, ...] | None = None
    target: str = "logit"
    gradient_weighting: bool = True
    apply_fedavg_weights: bool = False
    aggregation: str = "sum"
    responsible_margin: float = DEFAULT_RESPONSIBLE_MARGIN
    client_chunk_size: int = 16
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_int("last_n_blocks", self.last_n_blocks, minimum=1)
        _check_int("client_chunk_size", self.client_chunk_size, minimum=1)
        for name in ("include_lm_head", "gradient_weighting", "apply_fedavg_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _check_choice("target", self.target, TARGETS)
        _check_choice("aggregation", self.aggregation, AGGREGATIONS)
        _check_choice("dtype", self.dtype, tuple(DTYPES))
        self._check_margin()
        self._check_modules()
        self._check_device()

    def _check_margin(self) -> None:
        margin = self.responsible_margin
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0.0 <= margin <= 1.0:
            raise ConfigError(f"responsible_margin must be a number in [0, 1], got {margin!r}")

    def _check_modules(self) -> None:
        if self.modules is None:
            return
        if isinstance(self.modules, str) or not isinstance(self.modules, tuple | list):
            raise ConfigError(f"modules must be a list of module names, got {self.modules!r}")
        names = tuple(self.modules)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"modules must be a non-empty list of non-empty names, got {list(names)!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"modules lists a module twice: {list(names)!r}")
        for a in names:
            for b in names:
                if a != b and b.startswith(a + "."):
                    raise ConfigError(f"tracked module {b!r} lies inside tracked module {a!r}; track one of them")
        object.__setattr__(self, "modules", names)

    def _check_device(self) -> None:
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"device {self.device!r} is not a torch device name ({exc})") from None

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["modules"] = list(self.modules) if self.modules is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> AttributionConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"an attribution config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown attribution config key(s): {', '.join(unknown)}")
        values = dict(data)
        if values.get("modules") is not None and isinstance(values["modules"], list):
            values["modules"] = tuple(values["modules"])
        return cls(**values)

    def replace(self, **changes) -> AttributionConfig:
        return AttributionConfig.from_dict({**self.to_dict(), **changes})

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every field that can change the numbers."""
        method = {k: v for k, v in self.to_dict().items() if k not in _EXECUTION_ONLY}
        canonical = json.dumps(method, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
