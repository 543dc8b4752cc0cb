"""The result of attributing one response, and how token scores become sequence verdicts.

Shapes (T generated/teacher-forced tokens, K clients of the round):

- ``token_scores``    [T, K]  S_i(t) (times rho_i when `apply_fedavg_weights`)
- ``token_shares``    [T, K]  softmax over clients of each token's scores
- ``sequence_scores`` [K]     the configured aggregation of the token scores
- ``sequence_shares`` [K]     softmax of ``sequence_scores`` (``share`` aggregation: their mean)

All tensors are float64 on the CPU. `to_json`/`from_json` round-trip exactly
(float64 values print as the shortest repr that reads back bit-identical).
`to_inseq_json` exports in the spirit of Inseq's `FeatureAttributionOutput`
JSON so tools that read that layout can show it; the mapping is in its docstring.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch

from .config import AttributionConfig
from .errors import ResultError
from .responsible import responsible_set

METHOD_VERSION = "protoken/1"
RESULT_FORMAT = "protoken-attribution/1"
MODES = ("generated", "teacher_forced")


@dataclass
class Provenance:
    """What a result came from; enough to reproduce it."""

    federation: str
    round: int
    base_model: str
    kind: str
    global_sha256: str
    client_sha256: list[str]
    method_version: str
    config: dict
    config_hash: str
    tracked_modules: list[str]
    engine: str  # "fast" | "reference"


@dataclass
class AttributionResult:
    prompt_ids: list[int]
    response_ids: list[int]
    prompt_tokens: list[str]  # each prompt token decoded on its own
    response_tokens: list[str]  # each response token decoded on its own
    client_ids: list[str]
    token_scores: torch.Tensor  # [T, K]
    token_shares: torch.Tensor  # [T, K]
    sequence_scores: torch.Tensor  # [K]
    sequence_shares: torch.Tensor  # [K]
    predicted_client: str
    responsible_set: list[str]
    mode: str  # "generated" | "teacher_forced"
    provenance: Provenance
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def prompt_length(self) -> int:
        return len(self.prompt_ids)

    @property
    def response_text(self) -> str:
        return "".join(self.response_tokens)

    def top_clients(self) -> list[str]:
        """The top client of each token."""
        return [self.client_ids[i] for i in self.token_scores.argmax(dim=1).tolist()]

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> dict:
        return {
            "format": RESULT_FORMAT,
            "prompt_ids": self.prompt_ids, "response_ids": self.response_ids,
            "prompt_tokens": self.prompt_tokens, "response_tokens": self.response_tokens,
            "client_ids": self.client_ids,
            "token_scores": self.token_scores.tolist(), "token_shares": self.token_shares.tolist(),
            "sequence_scores": self.sequence_scores.tolist(), "sequence_shares": self.sequence_shares.tolist(),
            "predicted_client": self.predicted_client, "responsible_set": self.responsible_set,
            "mode": self.mode, "provenance": asdict(self.provenance), "timings": self.timings,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> AttributionResult:
        _check_dict(data)
        try:
            provenance = Provenance(**data["provenance"])
            tensors = {k: torch.tensor(data[k], dtype=torch.float64)
                       for k in ("token_scores", "token_shares", "sequence_scores", "sequence_shares")}
            plain = {k: data[k] for k in ("prompt_ids", "response_ids", "prompt_tokens", "response_tokens",
                                          "client_ids", "predicted_client", "responsible_set", "mode")}
        except (TypeError, ValueError) as exc:
            raise ResultError(f"attribution result JSON is malformed: {exc}") from None
        result = cls(**plain, **tensors, provenance=provenance, timings=dict(data.get("timings") or {}))
        _check_shapes(result)
        return result

    @classmethod
    def from_json(cls, text: str) -> AttributionResult:
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ResultError(f"attribution result is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_inseq_json(self, indent: int | None = None) -> str:
        """An Inseq-style `FeatureAttributionOutput` JSON of this result.

        Mapping (Inseq field -> ProToken):

        - ``sequence_attributions[0].source``: the prompt tokens, as
          ``{"token", "id"}`` objects;
        - ``target``: prompt + response tokens (decoder-only convention: the
          target repeats the prefix), with ``attr_pos_start`` = prompt length
          and ``attr_pos_end`` = prompt length + T, so the attributed steps are
          exactly the response tokens;
        - ``source_attributions`` / ``target_attributions``: null, because
          ProToken attributes to *clients*, not to input tokens;
        - ``step_scores``: one [T] list per client, ``"protoken_score:<id>"``
          (the [T, K] attribution table column by column), plus
          ``"protoken_top_share"`` (the top client's share per token);
        - ``sequence_scores``: ``"protoken_sequence_score:<id>"`` and
          ``"protoken_sequence_share:<id>"`` per client;
        - ``info``: the provenance plus predicted client and responsible set.
        """
        prompt = [{"token": t, "id": i} for t, i in zip(self.prompt_tokens, self.prompt_ids, strict=True)]
        response = [{"token": t, "id": i} for t, i in zip(self.response_tokens, self.response_ids, strict=True)]
        steps = {f"protoken_score:{c}": self.token_scores[:, k].tolist() for k, c in enumerate(self.client_ids)}
        steps["protoken_top_share"] = self.token_shares.max(dim=1).values.tolist()
        sequence = {f"protoken_sequence_score:{c}": float(self.sequence_scores[k]) for k, c in enumerate(self.client_ids)}
        sequence |= {f"protoken_sequence_share:{c}": float(self.sequence_shares[k])
                     for k, c in enumerate(self.client_ids)}
        attribution = {
            "source": prompt, "target": prompt + response,
            "source_attributions": None, "target_attributions": None,
            "step_scores": steps, "sequence_scores": sequence,
            "attr_pos_start": self.prompt_length, "attr_pos_end": self.prompt_length + len(self.response_ids),
        }
        info = {**asdict(self.provenance), "predicted_client": self.predicted_client,
                "responsible_set": self.responsible_set, "mode": self.mode, "attribution_method": "protoken"}
        return json.dumps({"sequence_attributions": [attribution], "step_attributions": None, "info": info},
                          indent=indent)

    # ------------------------------------------------------------ display

    def table(self, max_token_chars: int = 18) -> str:
        """A plain-text table: per token its position, text, top client and that client's share."""
        p = self.provenance
        lines = [f"round {p.federation}/{p.round} ({p.kind}), {len(self.client_ids)} clients, {self.mode}, "
                 f"engine {p.engine}", "",
                 f"{'pos':>4}  {'token':<{max_token_chars}}  {'top client':<20}  share"]
        shares = self.token_shares
        for t, (token, top) in enumerate(zip(self.response_tokens, self.top_clients(), strict=True)):
            k = self.client_ids.index(top)
            lines.append(f"{self.prompt_length + t:>4}  {_show(token, max_token_chars):<{max_token_chars}}  "
                         f"{top:<20}  {float(shares[t, k]):.3f}")
        lines += ["", "sequence shares:"]
        order = self.sequence_shares.argsort(descending=True).tolist()
        for k in order:
            lines.append(f"  {self.client_ids[k]:<20}  share {float(self.sequence_shares[k]):.4f}  "
                         f"score {float(self.sequence_scores[k]):.4g}")
        lines += ["", f"predicted client: {self.predicted_client}",
                  f"responsible set: {', '.join(self.responsible_set)}"]
        return "\n".join(lines)


def _show(token: str, width: int) -> str:
    text = repr(token)[1:-1]
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_dict(data) -> None:
    if not isinstance(data, dict):
        raise ResultError(f"attribution result must be a JSON object, got {type(data).__name__}")
    if data.get("format") != RESULT_FORMAT:
        raise ResultError(f"attribution result format must be {RESULT_FORMAT!r}, got {data.get('format')!r}")
    required = ("prompt_ids", "response_ids", "prompt_tokens", "response_tokens", "client_ids", "token_scores",
                "token_shares", "sequence_scores", "sequence_shares", "predicted_client", "responsible_set",
                "mode", "provenance")
    missing = [k for k in required if k not in data]
    if missing:
        raise ResultError(f"attribution result is missing key(s): {', '.join(missing)}")


def _check_shapes(result: AttributionResult) -> None:
    tokens, clients = len(result.response_ids), len(result.client_ids)
    expected = {"token_scores": (tokens, clients), "token_shares": (tokens, clients),
                "sequence_scores": (clients,), "sequence_shares": (clients,)}
    for name, shape in expected.items():
        if tuple(getattr(result, name).shape) != shape:
            raise ResultError(f"{name} has shape {tuple(getattr(result, name).shape)}, expected {shape}")
    if result.mode not in MODES:
        raise ResultError(f"mode must be one of {', '.join(MODES)}, got {result.mode!r}")
    if result.predicted_client not in result.client_ids:
        raise ResultError(f"predicted_client {result.predicted_client!r} is not one of the client ids")


# ---------------------------------------------------------------- from token scores to verdicts


def aggregate(token_scores: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence scores [K] and shares [K] from token scores [T, K] (see `AttributionConfig`)."""
    scores = token_scores.double()
    if method == "sum":
        sequence = scores.sum(dim=0)
        return sequence, torch.softmax(sequence, dim=0)
    if method == "zscore":
        sequence = zscore(scores).sum(dim=0)
        return sequence, torch.softmax(sequence, dim=0)
    if method == "share":
        votes = torch.softmax(scores, dim=1).sum(dim=0)
        return votes, votes / max(scores.shape[0], 1)
    raise ValueError(f"unknown aggregation {method!r}")


def zscore(scores: torch.Tensor) -> torch.Tensor:
    """Standardise each row over clients; a row with no spread becomes zeros (no vote)."""
    centred = scores - scores.mean(dim=1, keepdim=True)
    spread = scores.std(dim=1, unbiased=False, keepdim=True)
    return torch.where(spread > 0, centred / spread.clamp_min(torch.finfo(scores.dtype).tiny), 0.0)


def fedavg_weights(num_examples: list[int] | tuple[int, ...]) -> torch.Tensor:
    counts = torch.tensor(num_examples, dtype=torch.float64)
    return counts / counts.sum()


def build_result(loaded, *, prompt_ids: list[int], response_ids: list[int], raw_scores: torch.Tensor,
                 config: AttributionConfig, mode: str, engine: str, tracked: list[str],
                 timings: dict[str, float]) -> AttributionResult:
    """Apply rho (if configured), aggregate, pick the verdicts and attach provenance."""
    scores = raw_scores.double().cpu()
    if config.apply_fedavg_weights:
        scores = scores * fedavg_weights(loaded.info.num_examples)[None, :]
    sequence, shares = aggregate(scores, config.aggregation)
    ids = loaded.client_ids
    decode = _decoder(loaded.tokenizer)
    return AttributionResult(
        prompt_ids=list(prompt_ids), response_ids=list(response_ids),
        prompt_tokens=[decode(i) for i in prompt_ids], response_tokens=[decode(i) for i in response_ids],
        client_ids=ids, token_scores=scores, token_shares=torch.softmax(scores, dim=1),
        sequence_scores=sequence, sequence_shares=shares, predicted_client=ids[int(sequence.argmax())],
        responsible_set=responsible_set(shares, ids, config.responsible_margin), mode=mode,
        provenance=_provenance(loaded, config, engine, tracked), timings=timings,
    )


def _decoder(tokenizer):
    def decode(token_id: int) -> str:
        return tokenizer.decode([token_id]) if tokenizer is not None else str(token_id)

    return decode


def _provenance(loaded, config: AttributionConfig, engine: str, tracked: list[str]) -> Provenance:
    info = loaded.info
    return Provenance(
        federation=info.federation, round=info.round, base_model=info.base_model, kind=info.kind,
        global_sha256=info.global_sha256, client_sha256=list(info.client_sha256), method_version=METHOD_VERSION,
        config=config.to_dict(), config_hash=config.config_hash(), tracked_modules=list(tracked), engine=engine,
    )

