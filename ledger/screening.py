"""Screening of suspicious clients: two independent signals, each a statistical test with FDR control.

Pure functions on plain data (numpy, no database); `ledger.flags` stores the
findings and runs the review workflow.

1. Evidence-based (method ``evidence-binomial-bh/1``).
   Input: one `EvidenceRecord` per generation (its round, per-client sequence
   shares, per-token top client, and whether it is harmful: marked by a
   reviewer, or matched by a per-federation `HarmPolicy` of regexes/keywords
   on the response). The responsible client of a generation is its top-1
   client (argmax of the shares; ties to the smaller id), as in ProToken.
   For each client c, with n harmful generations of which k_c have c as top
   client, the null hypothesis is "c is top client of a harmful generation no
   more often than of any generation": k_c ~ Binomial(n, b_c), where b_c is
   c's baseline share. The one-sided p-value is P(X >= k_c). Baselines are
   given by the caller (e.g. FedAvg weights), or estimated as c's top-1
   frequency among the non-harmful generations, smoothed by one uniform
   pseudo-generation ((count_c + 1/K) / (n_benign + 1)) so that a client never
   seen on top still has a non-zero baseline. p-values of all clients are
   adjusted by Benjamini-Hochberg; c is flagged when its q-value is <= q
   (default 0.05) and k_c >= `min_count`. Score: -log10(q).

2. Update-based (method ``update-robust-z/1``), independent of the evidence.
   Input: per round, every participating client's update (client weights
   minus a reference: the previous round's global model when known, else the
   round's own global), as arrays or dicts of arrays of the tracked modules.
   Per round, with m the coordinate-wise median of the updates (robust to
   fewer than half the clients being malicious), three statistics per client:
   the Euclidean distance ||u_i - m||, the cosine distance 1 - cos(u_i, m),
   and the nearest-neighbour similarity max_j cos(u_i, u_j). The third is the
   collusion signal: clients trained on the same poisoned data send
   near-duplicate updates, which can drag the median towards themselves (on
   the simulated backdoor federation the malicious pair's updates have cosine
   0.9-0.97 with each other against <= 0.46 for any benign pair, while
   their distance to the median fell below the benign clients' after round
   1). Each statistic becomes a robust z-score, (v - median(v)) / (1.4826
   MAD(v)), over the round's clients (rounds with fewer than `min_clients`
   are skipped). The round p-value of a client is 3 * (1 - Phi(max z))
   (Bonferroni over the three statistics; one-sided, since only "far" or
   "too similar" is suspicious); a client's rounds are combined by Fisher's method
   (-2 sum ln p ~ chi2 with 2R degrees of freedom), and the per-client
   p-values are adjusted by Benjamini-Hochberg. A client is flagged when its
   q-value is <= q and its median round z is >= `min_median_z` (default 3):
   the MAD of a handful of clients is noisy, so significance alone is not
   trusted without a consistently large effect (the lower median, so with
   two rounds both must be large); z-scores use a floor on the spread (10% of
   the median distance, 0.05 for cosine statistics) so that near-identical
   benign clients do not turn tiny differences into huge z. Score: that
   median z. Limitation: updates alone cannot tell a benign minority (say 2
   of 5 clients on another domain) from a colluding pair; that is why flags
   go to review and the evidence signal is independent.

Updates are streamed in column blocks of shape (K, n), so a round needs memory
for one block of all clients, never for whole models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ledger import canonical
from ledger.errors import InvalidInput

METHOD_EVIDENCE = "evidence-binomial-bh/1"
METHOD_UPDATES = "update-robust-z/1"
BLOCK_ELEMENTS = 1 << 20  # columns per streamed block


@dataclass(frozen=True)
class Finding:
    """One suspicious client according to one method; `evidence` is JSON (generations, tokens, rounds)."""

    client_id: str
    method: str
    score: float
    p_value: float | None
    q_value: float | None
    evidence: dict[str, Any]


@dataclass(frozen=True)
class ScreeningResult:
    method: str
    findings: list[Finding]
    table: list[dict[str, Any]]  # one row of statistics per client tested, flagged or not
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> set[str]:
        return {f.client_id for f in self.findings}


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """BH-adjusted q-values (step-up, monotone, capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return []
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise InvalidInput("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty_like(p)
    q[order] = np.minimum(ranked, 1.0)
    return q.tolist()


def robust_z(values: Sequence[float], min_scale: float = 0.0) -> np.ndarray:
    """(v - median) / max(1.4826 MAD, min_scale); MAD = 0 falls back to the mean absolute deviation."""
    v = np.asarray(values, dtype=float)
    deviation = np.abs(v - np.median(v))
    scale = 1.4826 * np.median(deviation)
    if scale <= 0:
        scale = 1.2533 * np.mean(deviation)  # Iglewicz & Hoaglin's fallback for MAD = 0
    scale = max(scale, min_scale)
    if scale <= 0 or not np.isfinite(scale):
        return np.zeros_like(v)
    return (v - np.median(v)) / scale


# --- evidence-based ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HarmPolicy:
    """Per-federation rules that mark a response harmful: any regex or keyword (case-insensitive) matches."""

    patterns: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    name: str = "policy"

    def __post_init__(self) -> None:
        if isinstance(self.patterns, str) or isinstance(self.keywords, str):
            raise InvalidInput("HarmPolicy patterns and keywords must be lists of strings")
        object.__setattr__(self, "patterns", tuple(self.patterns))
        object.__setattr__(self, "keywords", tuple(k.lower() for k in self.keywords))
        if any(not isinstance(k, str) or not k.strip() for k in self.keywords):
            raise InvalidInput("HarmPolicy keywords must be non-empty strings")
        object.__setattr__(self, "_compiled", tuple(_compile(p) for p in self.patterns))

    def reasons(self, text: str | None) -> list[str]:
        if not text:
            return []
        lowered = text.lower()
        hits = [f"regex:{rx.pattern}" for rx in self._compiled if rx.search(text)]
        return hits + [f"keyword:{k}" for k in self.keywords if k in lowered]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HarmPolicy:
        unknown = set(data) - {"patterns", "keywords", "name"}
        if unknown:
            raise InvalidInput(f"harm policy has unknown keys {sorted(unknown)}; allowed: patterns, keywords, name")
        return cls(patterns=tuple(data.get("patterns", ())), keywords=tuple(data.get("keywords", ())),
                   name=str(data.get("name", "policy")))


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, TypeError) as exc:
        raise InvalidInput(f"harm policy pattern {pattern!r} is not a valid regex: {exc}") from exc


@dataclass(frozen=True)
class EvidenceRecord:
    """What the platform stored about one generation."""

    generation_id: str
    round_id: int
    shares: Mapping[str, float]  # per-client sequence shares
    harmful: bool = False  # marked by a reviewer
    token_top_clients: tuple[str, ...] = ()  # per generated token, its top client
    response: str | None = None  # for harm policies

    def __post_init__(self) -> None:
        if not isinstance(self.generation_id, str) or not 1 <= len(self.generation_id) <= 200:
            raise InvalidInput(f"generation_id must be a 1-200 character string, got {self.generation_id!r}")
        if isinstance(self.round_id, bool) or not isinstance(self.round_id, int) or self.round_id < 0:
            raise InvalidInput(f"generation {self.generation_id}: round_id must be an integer >= 0")
        if not isinstance(self.harmful, bool):
            raise InvalidInput(f"generation {self.generation_id}: harmful must be true or false")
        object.__setattr__(self, "shares", _shares(self.generation_id, self.shares))
        tokens = tuple(canonical.client_id(c) for c in self.token_top_clients)
        object.__setattr__(self, "token_top_clients", tokens)

    @property
    def top_client(self) -> str:
        return min(self.shares, key=lambda c: (-self.shares[c], c))


def _shares(generation_id: str, shares: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(shares, Mapping) or not shares:
        raise InvalidInput(f"generation {generation_id}: shares must be a non-empty {{client: share}} map")
    result = {}
    for client, share in shares.items():
        canonical.client_id(client)
        if isinstance(share, bool) or not isinstance(share, int | float) or not math.isfinite(share) or share < 0:
            raise InvalidInput(f"generation {generation_id}: share of {client} must be a finite number >= 0")
        result[client] = float(share)
    return result


@dataclass(frozen=True)
class EvidenceConfig:
    q: float = 0.05  # Benjamini-Hochberg false discovery rate
    min_count: int = 2  # harmful generations on top before a client can be flagged
    max_listed: int = 200  # generations/tokens listed in a flag's evidence

    def __post_init__(self) -> None:
        if not 0 < self.q < 1:
            raise InvalidInput(f"q must be in (0, 1), got {self.q}")
        if self.min_count < 1 or self.max_listed < 1:
            raise InvalidInput("min_count and max_listed must be >= 1")


def screen_evidence(records: Iterable[EvidenceRecord], baseline: Mapping[str, float] | None = None,
                    config: EvidenceConfig | None = None, policy: HarmPolicy | None = None) -> ScreeningResult:
    """Flag clients on top of harmful generations more often than their baseline share allows."""
    config = config or EvidenceConfig()
    records = list(records)
    harmful = [(r, _harm_reasons(r, policy)) for r in records]
    harmful = [(r, why) for r, why in harmful if why]
    clients = sorted({c for r in records for c in r.shares} | set(baseline or {}))
    notes = [f"{len(records)} generations, {len(harmful)} harmful, {len(clients)} clients"]
    if not harmful:
        return ScreeningResult(METHOD_EVIDENCE, [], [], notes + ["no harmful generations: nothing to test"])
    base = _baseline(records, harmful, clients, baseline)
    table = _binomial_table([r for r, _ in harmful], clients, base)
    q_values = benjamini_hochberg([row["p_value"] for row in table])
    findings = []
    for row, q in zip(table, q_values, strict=True):
        row["q_value"] = q
        row["flagged"] = q <= config.q and row["k"] >= config.min_count
        if row["flagged"]:
            findings.append(_evidence_finding(row, harmful, config))
    return ScreeningResult(METHOD_EVIDENCE, findings, table, notes)


def _harm_reasons(record: EvidenceRecord, policy: HarmPolicy | None) -> list[str]:
    reasons = ["reviewer"] if record.harmful else []
    if policy is not None:
        reasons += [f"{policy.name}:{hit}" for hit in policy.reasons(record.response)]
    return reasons


def _baseline(records, harmful, clients: list[str], given: Mapping[str, float] | None) -> dict[str, float]:
    if given is not None:
        missing = [c for c in clients if c not in given]
        if missing:
            raise InvalidInput(f"clients {missing[:5]} appear in the evidence but have no baseline share")
        values = {c: float(given[c]) for c in clients}
        if any(not math.isfinite(v) or v < 0 for v in values.values()) or sum(values.values()) <= 0:
            raise InvalidInput("baseline shares must be finite, >= 0 and not all zero")
        total = sum(values.values())
        return {c: min(max(v / total, 1e-12), 1.0) for c, v in values.items()}
    harmful_ids = {r.generation_id for r, _ in harmful}
    benign = [r for r in records if r.generation_id not in harmful_ids]
    counts = {c: 0 for c in clients}
    for record in benign:
        counts[record.top_client] += 1
    return {c: (counts[c] + 1 / len(clients)) / (len(benign) + 1) for c in clients}


def _binomial_table(harmful: list[EvidenceRecord], clients: list[str], base: dict[str, float]) -> list[dict]:
    n = len(harmful)
    tops = [r.top_client for r in harmful]
    rows = []
    for client in clients:
        k = tops.count(client)
        p_value = float(stats.binom.sf(k - 1, n, base[client])) if k > 0 else 1.0
        rows.append({"client_id": client, "n": n, "k": k, "baseline": base[client],
                     "observed": k / n, "lift": (k / n) / base[client], "p_value": p_value})
    return rows


def _evidence_finding(row: dict, harmful: list, config: EvidenceConfig) -> Finding:
    client = row["client_id"]
    mine = [(r, why) for r, why in harmful if r.top_client == client]
    listed = mine[: config.max_listed]
    tokens = {r.generation_id: [i for i, c in enumerate(r.token_top_clients) if c == client] for r, _ in listed}
    evidence = {
        "test": "one-sided binomial test of top-1 attribution on harmful generations vs baseline share, "
                "Benjamini-Hochberg",
        "harmful_generations": row["n"], "on_top": row["k"], "baseline_share": row["baseline"],
        "observed_share": row["observed"], "lift": row["lift"],
        "generations": [{"id": r.generation_id, "round": r.round_id, "share": r.shares[client], "why": why}
                        for r, why in listed],
        "tokens": {g: positions for g, positions in tokens.items() if positions},
        "rounds": sorted({r.round_id for r, _ in mine}),
        "truncated": len(mine) > len(listed),
    }
    score = -math.log10(max(row["q_value"], 1e-300))
    return Finding(client, METHOD_EVIDENCE, score, row["p_value"], row["q_value"], evidence)


# --- update-based --------------------------------------------------------------------------------

Tensors = np.ndarray | Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RoundStatistics:
    """Per-client statistics of one round's updates, each of shape (K,)."""

    round_id: int
    client_ids: tuple[str, ...]
    distance: np.ndarray  # ||u_i - m||, m the coordinate-wise median
    cosine_distance: np.ndarray  # 1 - cos(u_i, m)
    norm: np.ndarray  # ||u_i||
    nn_similarity: np.ndarray  # max over j != i of cos(u_i, u_j)


@dataclass(frozen=True)
class RoundUpdates:
    """One round's client updates held in memory: a vector or a {module: array} dict per client."""

    round_id: int
    updates: Mapping[str, Tensors]
    reference: Tensors | None = None  # subtracted from every client (e.g. the previous global model)

    def __post_init__(self) -> None:
        if isinstance(self.round_id, bool) or not isinstance(self.round_id, int) or self.round_id < 0:
            raise InvalidInput(f"round_id must be an integer >= 0, got {self.round_id!r}")
        if not self.updates:
            raise InvalidInput(f"round {self.round_id} has no client updates")
        normalized = {canonical.client_id(c): _as_dict(u, f"update of {c}") for c, u in self.updates.items()}
        object.__setattr__(self, "updates", normalized)
        ref = None if self.reference is None else _as_dict(self.reference, "reference")
        object.__setattr__(self, "reference", ref)
        _check_shapes(self.round_id, normalized, ref)

    def statistics(self) -> RoundStatistics:
        clients = tuple(sorted(self.updates))
        return round_statistics(self.round_id, clients, self._blocks(clients))

    def _blocks(self, clients: tuple[str, ...]) -> Iterator[np.ndarray]:
        for name in sorted(self.updates[clients[0]]):
            stacked = np.stack([self.updates[c][name].reshape(-1) for c in clients]).astype(np.float64)
            if self.reference is not None:
                stacked -= self.reference[name].reshape(-1)
            for start in range(0, stacked.shape[1], BLOCK_ELEMENTS):
                yield stacked[:, start:start + BLOCK_ELEMENTS]  # (K, n)


def _as_dict(value: Tensors, where: str) -> dict[str, np.ndarray]:
    items = value.items() if isinstance(value, Mapping) else [("update", value)]
    result = {}
    for name, array in items:
        array = np.asarray(array)
        if array.dtype.kind not in "fiu":
            raise InvalidInput(f"{where}/{name} must be a numeric array, got dtype {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise InvalidInput(f"{where}/{name} contains NaN or infinite values")
        result[str(name)] = array
    return result


def _check_shapes(round_id: int, updates: dict, reference: dict | None) -> None:
    first_client, first = next(iter(updates.items()))
    layout = {name: a.shape for name, a in first.items()}
    for client, tensors in list(updates.items()) + ([("reference", reference)] if reference else []):
        shapes = {name: a.shape for name, a in tensors.items()}
        if shapes != layout:
            raise InvalidInput(f"round {round_id}: {client} has tensors {_describe(shapes)} but "
                               f"{first_client} has {_describe(layout)}; updates must have the same modules")


def _describe(shapes: dict) -> str:
    return ", ".join(f"{n}{list(s)}" for n, s in sorted(shapes.items()))[:300]


def round_statistics(round_id: int, client_ids: Sequence[str], blocks: Iterable[np.ndarray]) -> RoundStatistics:
    """Accumulate distances to the coordinate-wise median and the Gram matrix over (K, n) column blocks."""
    k = len(client_ids)
    sq_dist, dot, gram, centre_sq = np.zeros(k), np.zeros(k), np.zeros((k, k)), 0.0
    for block in blocks:
        if block.ndim != 2 or block.shape[0] != k:
            raise InvalidInput(f"round {round_id}: update block has shape {block.shape}, expected ({k}, n)")
        centre = np.median(block, axis=0)  # (n,)
        sq_dist += np.square(block - centre).sum(axis=1)
        dot += block @ centre
        gram += block @ block.T  # (K, K)
        centre_sq += float(centre @ centre)
    norm = np.sqrt(np.diag(gram))
    denom = norm * math.sqrt(centre_sq)
    cosine = np.divide(dot, denom, out=np.ones(k), where=denom > 0)
    return RoundStatistics(round_id, tuple(client_ids), np.sqrt(sq_dist), 1.0 - np.clip(cosine, -1, 1), norm,
                           _nearest_neighbour(gram, norm))


def _nearest_neighbour(gram: np.ndarray, norm: np.ndarray) -> np.ndarray:
    outer = np.outer(norm, norm)
    similarity = np.divide(gram, outer, out=np.zeros_like(gram), where=outer > 0)  # (K, K) cosines
    np.fill_diagonal(similarity, -np.inf)
    return similarity.max(axis=1) if len(norm) > 1 else np.zeros(len(norm))


@dataclass(frozen=True)
class UpdateConfig:
    q: float = 0.05
    min_median_z: float = 3.0
    min_clients: int = 4  # the median and MAD of fewer clients say nothing
    min_relative_spread: float = 0.1  # distance z-scores use at least 10% of the median distance as scale
    min_cosine_spread: float = 0.05  # cosine-based z-scores use at least 0.05 as scale

    def __post_init__(self) -> None:
        if not 0 < self.q < 1:
            raise InvalidInput(f"q must be in (0, 1), got {self.q}")
        if self.min_clients < 3:
            raise InvalidInput("min_clients must be >= 3")
        if not math.isfinite(self.min_median_z):
            raise InvalidInput("min_median_z must be finite")
        if not (0 <= self.min_relative_spread < 10 and 0 <= self.min_cosine_spread < 2):
            raise InvalidInput("min_relative_spread must be in [0, 10) and min_cosine_spread in [0, 2)")


def screen_updates(rounds: Iterable[RoundUpdates | RoundStatistics],
                   config: UpdateConfig | None = None) -> ScreeningResult:
    """Flag clients whose updates are consistently far from the robust centre of their rounds."""
    config = config or UpdateConfig()
    per_client: dict[str, list[dict]] = {}
    notes: list[str] = []
    for item in rounds:
        round_stats = item.statistics() if isinstance(item, RoundUpdates) else item
        if len(round_stats.client_ids) < config.min_clients:
            notes.append(f"round {round_stats.round_id} skipped: {len(round_stats.client_ids)} clients "
                         f"< min_clients={config.min_clients}")
            continue
        for client, row in zip(round_stats.client_ids, _round_rows(round_stats, config), strict=True):
            per_client.setdefault(client, []).append(row)
    return _update_findings(per_client, config, notes)


def _round_rows(s: RoundStatistics, config: UpdateConfig) -> list[dict]:
    # the spread floors keep near-identical benign clients from turning tiny differences into huge z
    z_dist = robust_z(s.distance, config.min_relative_spread * float(np.median(s.distance)))
    z_cos = robust_z(s.cosine_distance, config.min_cosine_spread)
    z_nn = robust_z(s.nn_similarity, config.min_cosine_spread)
    rows = []
    for i in range(len(s.client_ids)):
        z = max(float(z_dist[i]), float(z_cos[i]), float(z_nn[i]))
        rows.append({"round": s.round_id, "distance": float(s.distance[i]),
                     "cosine_distance": float(s.cosine_distance[i]), "norm": float(s.norm[i]),
                     "nn_similarity": float(s.nn_similarity[i]), "z_distance": float(z_dist[i]),
                     "z_cosine": float(z_cos[i]), "z_nn_similarity": float(z_nn[i]), "z": z,
                     "p_value": min(1.0, 3.0 * float(stats.norm.sf(z)))})
    return rows


def _lower_median(values: list[float]) -> float:
    """The lower median: with two rounds both must be large, not just their mean."""
    return float(sorted(values)[(len(values) - 1) // 2])


def _update_findings(per_client: dict[str, list[dict]], config: UpdateConfig, notes: list[str]) -> ScreeningResult:
    clients = sorted(per_client)
    table = []
    for client in clients:
        rows = per_client[client]
        fisher = -2.0 * sum(math.log(max(r["p_value"], 1e-300)) for r in rows)
        table.append({"client_id": client, "rounds": len(rows),
                      "median_z": _lower_median([r["z"] for r in rows]),
                      "p_value": float(stats.chi2.sf(fisher, 2 * len(rows)))})
    findings = []
    for row, q in zip(table, benjamini_hochberg([r["p_value"] for r in table]), strict=True):
        row["q_value"] = q
        row["flagged"] = q <= config.q and row["median_z"] >= config.min_median_z
        if row["flagged"]:
            evidence = {"test": "robust z of distance and cosine distance to the coordinate-wise median and of "
                                "nearest-neighbour similarity, Fisher over rounds, Benjamini-Hochberg",
                        "median_z": row["median_z"], "rounds": per_client[row["client_id"]]}
            findings.append(Finding(row["client_id"], METHOD_UPDATES, row["median_z"], row["p_value"], q,
                                    evidence))
    return ScreeningResult(METHOD_UPDATES, findings, table, notes)
