"""Which clients are responsible for a response: a set, not just the top-1.

Rule (one parameter, the margin m in [0, 1]): client i is responsible when
its sequence share is at least (1 - m) times the top share,

    R(m) = { i : share_i >= (1 - m) * max_j share_j }.

With the published softmax shares, share_i / share_top = exp(S_i - S_top), so
the rule keeps every client whose sequence score is within -ln(1 - m) of the
best: the top client is always in, m = 0 keeps only the top (and exact ties),
m = 1 keeps everyone. It depends only on ratios, so it is unchanged by adding
a constant to all scores.

Default m = 0.5 (`attribution.config.DEFAULT_RESPONSIBLE_MARGIN`): a client is
reported when it is at least half as likely as the top one, i.e. its score is
within ln 2 ~ 0.69 of the best. Two colluding clients with nearly equal
evidence are both reported, while a client clearly behind is not. The right
value depends on the federation (score scale grows with response length and
model), so `calibrate_margin` picks it from labelled cases.

`calibrate_margin(shares, truths)` maximises the mean F1 between R(m) and the
true responsible set over the cases. R(m) only changes where m crosses some
1 - share_i / share_top, so those breakpoints are the only candidates; of the
best interval [b_k, b_k+1) it returns the midpoint, the value farthest from
both neighbouring decisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import ConfigError


def responsible_set(shares: torch.Tensor, client_ids: Sequence[str], margin: float) -> list[str]:
    """Client ids whose share is >= (1 - margin) * top share, best first."""
    _check_margin(margin)
    shares = torch.as_tensor(shares, dtype=torch.float64)
    if shares.dim() != 1 or len(shares) != len(client_ids) or len(shares) == 0:
        raise ConfigError(f"shares must be a 1-D tensor with one entry per client ({len(client_ids)})")
    ratio = _ratios(shares)
    keep = [k for k in shares.argsort(descending=True, stable=True).tolist() if ratio[k] >= 1.0 - margin]
    return [client_ids[k] for k in keep]


def _ratios(shares: torch.Tensor) -> torch.Tensor:
    top = shares.max()
    return shares / top if top > 0 else torch.ones_like(shares)


def _check_margin(margin: float) -> None:
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0.0 <= margin <= 1.0:
        raise ConfigError(f"responsible margin must be a number in [0, 1], got {margin!r}")


def f1(predicted: set, truth: set) -> float:
    if not predicted and not truth:
        return 1.0
    hits = len(predicted & truth)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(truth)
    return 2 * precision * recall / (precision + recall)


def calibrate_margin(results, truths: Sequence[set[str] | Sequence[str]]) -> float:
    """The margin maximising mean F1 of the responsible set over labelled cases.

    `results`: `AttributionResult`s (or (shares, client_ids) pairs); `truths`:
    the true responsible client ids of each case.
    """
    cases = [_case(r) for r in results]
    if not cases or len(cases) != len(truths):
        raise ConfigError(f"calibrate_margin needs one truth per result; got {len(cases)} results "
                          f"and {len(truths)} truths")
    truth_sets = [set(t) for t in truths]
    breakpoints = sorted({0.0, 1.0} | {min(1.0, max(0.0, 1.0 - r)) for shares, _ in cases
                                       for r in _ratios(shares).tolist()})
    scored = [(_mean_f1(cases, truth_sets, m), m) for m in breakpoints]
    best = max(score for score, _ in scored)
    index = next(i for i, (score, _) in enumerate(scored) if score == best)
    upper = breakpoints[index + 1] if index + 1 < len(breakpoints) else breakpoints[index]
    # Stay in the best interval: between this breakpoint and the next the sets do not change.
    middle = (breakpoints[index] + upper) / 2
    return middle if _mean_f1(cases, truth_sets, middle) == best else breakpoints[index]


def _case(result) -> tuple[torch.Tensor, list[str]]:
    if isinstance(result, tuple) and len(result) == 2:
        shares, ids = result
        return torch.as_tensor(shares, dtype=torch.float64), list(ids)
    return result.sequence_shares.double(), list(result.client_ids)


def _mean_f1(cases, truths: list[set], margin: float) -> float:
    scores = [f1(set(responsible_set(shares, ids, margin)), truth) for (shares, ids), truth in zip(cases, truths,
                                                                                                     strict=True)]
    return sum(scores) / len(scores)
