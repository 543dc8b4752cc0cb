"""Screening of suspicious clients: pure functions, no database.

Two independent signals, each producing `Finding`s that `ledger.flags` turns
into flags with a review workflow:

- **Evidence-based** (`screen_generations`). Among the period's generations
  marked harmful (by a reviewer, or by a federation's `HarmRule`s on the
  response text), count how often each client is the top-1 attributed client.
  Under the null hypothesis that harm is unrelated to a client, that count is
  Binomial(n_harmful, p0) where p0 is the client's top-1 rate on the period's
  other generations (Laplace-smoothed, so an unseen client has a small but
  non-zero baseline). A one-sided binomial test per client, then
  Benjamini-Hochberg across clients, controls the false discovery rate.
- **Update-based** (`screen_updates`). Per round, each client's update vector
  (its change to the tracked parameters) is compared with the coordinate-wise
  median of the round's updates: the update's norm and its cosine distance to
  that robust centre are turned into robust z-scores (median/MAD over the
  round's clients). A client that is an outlier in enough of its rounds is flagged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom

EVIDENCE_METHOD = "evidence-binomial-bh/1"
UPDATE_METHOD = "update-outlier/1"
MAX_EVIDENCE_ITEMS = 200  # per flag; counts are always complete


@dataclass(frozen=True)
class Finding:
    client_id: str
    method: str
    score: float  # higher is more suspicious; comparable within a method
    evidence: dict


@dataclass(frozen=True)
class HarmRule:
    """A per-federation policy on response text: a regular expression or any of some keywords."""

    name: str
    pattern: str = ""
    keywords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or bool(self.pattern) == bool(self.keywords):
            raise ValueError(f"harm rule {self.name!r} needs a name and exactly one of pattern or keywords")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"harm rule {self.name!r}: invalid regular expression: {e}") from e

    def matches(self, text: str) -> bool:
        if self.pattern:
            return re.search(self.pattern, text, flags=re.IGNORECASE) is not None
        lowered = text.lower()
        return any(k.lower() in lowered for k in self.keywords)


def harm_reasons(response: str, rules: Sequence[HarmRule]) -> list[str]:
    """Names of the rules a response breaks."""
    return [rule.name for rule in rules if rule.matches(response)]


@dataclass(frozen=True)
class GenerationEvidence:
    """What screening needs of one attributed generation."""

    generation_id: str
    round: int
    shares: Mapping[str, float]  # client -> sequence share
    harmful: bool = False
    reasons: tuple[str, ...] = ()  # "reviewer", rule names
    token_top: tuple[str, ...] = ()  # top-1 client of each response token, if stored

    @property
    def top_client(self) -> str:
        return min(self.shares, key=lambda c: (-self.shares[c], c))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """BH-adjusted q-values, in the input order."""
    n = len(p_values)
    order = sorted(range(n), key=lambda i: p_values[i])
    q = [0.0] * n
    running = 1.0
    for rank in range(n, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * n / rank)
        q[i] = running
    return q


def screen_generations(
    generations: Sequence[GenerationEvidence], *, alpha: float = 0.05, min_harmful: int = 3
) -> list[Finding]:
    """Clients on whom harmful generations concentrate beyond their baseline, at FDR `alpha`."""
    harmful = [g for g in generations if g.harmful]
    if len(harmful) < min_harmful:
        return []
    clients = sorted({c for g in generations for c in g.shares})
    benign_top = _top_counts([g for g in generations if not g.harmful])
    harmful_top = _top_counts(harmful)
    n_benign = len(generations) - len(harmful)
    tests = []
    for c in clients:
        p0 = (benign_top.get(c, 0) + 1) / (n_benign + len(clients))
        k = harmful_top.get(c, 0)
        tests.append((c, k, p0, float(binom.sf(k - 1, len(harmful), p0)) if k else 1.0))
    q_values = benjamini_hochberg([t[3] for t in tests])
    findings = []
    for (c, k, p0, p), q in zip(tests, q_values, strict=True):
        if q <= alpha and k / len(harmful) > p0:
            findings.append(Finding(c, EVIDENCE_METHOD, _neglog10(q), _generation_evidence(c, harmful, k, p0, p, q)))
    return findings


def _top_counts(generations: Sequence[GenerationEvidence]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for g in generations:
        counts[g.top_client] = counts.get(g.top_client, 0) + 1
    return counts


def _neglog10(x: float) -> float:
    return round(-math.log10(max(x, 1e-300)), 6)


def _generation_evidence(client, harmful, k, p0, p, q) -> dict:
    mine = [g for g in harmful if g.top_client == client]
    return {
        "test": "one-sided binomial on top-1 counts, Benjamini-Hochberg across clients",
        "harmful_generations": len(harmful),
        "top1_on_harmful": k,
        "baseline_top1_rate": round(p0, 9),
        "p_value": p,
        "q_value": q,
        "rounds": sorted({g.round for g in mine}),
        "generations": [
            {
                "id": g.generation_id,
                "round": g.round,
                "share": round(float(g.shares[client]), 6),
                "reasons": list(g.reasons),
                "tokens": [i for i, t in enumerate(g.token_top) if t == client],
            }
            for g in mine[:MAX_EVIDENCE_ITEMS]
        ],
    }


@dataclass(frozen=True)
class RoundOutliers:
    round: int
    scores: dict[str, dict] = field(default_factory=dict)  # client -> {norm, cos_dist, z_norm, z_cos, score}


def robust_z(x: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD), with a floor on the scale so identical values give 0, not inf."""
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    scale = max(mad, 1e-9 * max(abs(med), 1.0))
    return (x - med) / scale


def round_outliers(round_id: int, updates: Mapping[str, np.ndarray]) -> RoundOutliers:
    """Norm and cosine-distance outlier scores of one round's client updates."""
    clients = sorted(updates)
    U = np.stack([np.asarray(updates[c], dtype=np.float64).ravel() for c in clients])  # (K, D)
    centre = np.median(U, axis=0)  # (D,)
    norms = np.linalg.norm(U, axis=1)  # (K,)
    denom = np.maximum(norms * np.linalg.norm(centre), 1e-30)
    cos_dist = 1.0 - (U @ centre) / denom  # (K,)
    z_norm, z_cos = robust_z(norms), robust_z(cos_dist)
    out = RoundOutliers(round_id)
    for i, c in enumerate(clients):
        score = max(abs(float(z_norm[i])), float(z_cos[i]))
        out.scores[c] = {
            "norm": float(norms[i]),
            "cos_dist": float(cos_dist[i]),
            "z_norm": float(z_norm[i]),
            "z_cos": float(z_cos[i]),
            "score": score,
        }
    return out


def screen_updates(
    rounds: Mapping[int, Mapping[str, np.ndarray]],
    *,
    threshold: float = 3.5,
    min_fraction: float = 0.5,
    min_clients: int = 4,
) -> list[Finding]:
    """Clients whose updates are outliers (score > threshold) in at least `min_fraction` of their rounds."""
    per_client: dict[str, list[tuple[int, dict]]] = {}
    for r in sorted(rounds):
        if len(rounds[r]) < min_clients:
            continue  # too few updates for a robust centre
        for c, s in round_outliers(r, rounds[r]).scores.items():
            per_client.setdefault(c, []).append((r, s))
    findings = []
    for c in sorted(per_client):
        seen = per_client[c]
        outlying = [(r, s) for r, s in seen if s["score"] > threshold]
        if outlying and len(outlying) >= min_fraction * len(seen):
            score = round(float(np.median([s["score"] for _, s in seen])), 6)
            evidence = {
                "test": f"robust z of update norm and cosine distance to the round median > {threshold}",
                "rounds_seen": len(seen),
                "rounds_outlying": len(outlying),
                "rounds": [{"round": r, **{k: round(v, 6) for k, v in s.items()}} for r, s in outlying],
            }
            findings.append(Finding(c, UPDATE_METHOD, score, evidence))
    return findings
