"""Reward allocation policies: pure functions, no database.

Given each client's contribution over a period, a pool of integer minor units
and the rules, `allocate` returns integer amounts per client. The maths is
exact (rational arithmetic on the float contributions), so the result is a
deterministic function of its inputs:

1. Clients that are excluded (suspended, or flagged under an "exclude"
   policy) or contributed nothing get nothing.
2. The rest are ranked by contribution (then client id). Their real-valued
   shares are proportional to contribution, with any share above the cap
   clipped to the cap and the excess spread over the others (water-filling).
3. A minimum payout drops the lowest-ranked contributors, a group of equal
   contributions at a time, until everyone left receives at least the minimum.
   Dropping is monotone (adding a client never raises anyone's share), so the
   largest feasible group prefix is found by bisection.
4. Largest-remainder rounding turns shares into integers that sum exactly to
   the pool; ties in the remainder go to the larger contribution, then the
   smaller client id.

The amounts always sum to the pool, except that what nobody may take stays
in it as `retained`: when every eligible client is at the cap, or nobody is
eligible. `sum(amounts) + retained == pool` always holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ledger.errors import AllocationError

MODES = ("sequence", "token")


@dataclass(frozen=True)
class AllocationRules:
    minimum_payout: int = 0
    cap_per_client: int | None = None
    excluded: frozenset[str] = frozenset()  # receive nothing; their share goes to the others
    held: frozenset[str] = frozenset()  # receive their share into a held account

    def __post_init__(self) -> None:
        object.__setattr__(self, "excluded", frozenset(self.excluded))
        object.__setattr__(self, "held", frozenset(self.held))
        if not _is_int(self.minimum_payout) or self.minimum_payout < 0:
            raise AllocationError(f"minimum_payout must be a non-negative integer, got {self.minimum_payout!r}")
        if self.cap_per_client is not None and (not _is_int(self.cap_per_client) or self.cap_per_client < 1):
            raise AllocationError(f"cap_per_client must be a positive integer or None, got {self.cap_per_client!r}")
        if self.cap_per_client is not None and self.cap_per_client < self.minimum_payout:
            raise AllocationError("cap_per_client is below minimum_payout: nobody could be paid")

    def as_dict(self) -> dict:
        return {
            "minimum_payout": self.minimum_payout,
            "cap_per_client": self.cap_per_client,
            "excluded": sorted(self.excluded),
            "held": sorted(self.held),
        }


@dataclass(frozen=True)
class Allocation:
    pool: int
    amounts: dict[str, int]  # client -> minor units, only positive amounts, ordered by client id
    retained: int  # stays in the pool
    held: frozenset[str] = field(default_factory=frozenset)  # clients whose amount goes to a held account

    @property
    def payable(self) -> dict[str, int]:
        return {c: a for c, a in self.amounts.items() if c not in self.held}

    @property
    def held_amounts(self) -> dict[str, int]:
        return {c: a for c, a in self.amounts.items() if c in self.held}


def allocate(contributions: Mapping[str, float], pool: int, rules: AllocationRules | None = None) -> Allocation:
    """Split `pool` minor units over clients in proportion to their contributions."""
    rules = rules or AllocationRules()
    if not _is_int(pool) or pool < 0:
        raise AllocationError(f"pool must be a non-negative integer of minor units, got {pool!r}")
    ranked = _ranked(contributions, rules.excluded)
    ranked = _feasible_prefix(ranked, pool, rules)
    shares = _water_fill([w for _, w in ranked], pool, rules.cap_per_client)
    distributed = sum(shares, Fraction(0))
    amounts = _largest_remainder([c for c, _ in ranked], [w for _, w in ranked], shares, int(distributed))
    amounts = {c: a for c, a in sorted(amounts.items()) if a > 0}
    return Allocation(
        pool=pool,
        amounts=amounts,
        retained=pool - sum(amounts.values()),
        held=frozenset(c for c in amounts if c in rules.held),
    )


def _is_int(x) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _ranked(contributions: Mapping[str, float], excluded: frozenset[str]) -> list[tuple[str, Fraction]]:
    out = []
    for client, w in contributions.items():
        if not math.isfinite(w) or w < 0:
            raise AllocationError(f"contribution of {client!r} must be finite and non-negative, got {w!r}")
        if w > 0 and client not in excluded:
            out.append((str(client), Fraction(float(w))))
    out.sort(key=lambda cw: (-cw[1], cw[0]))
    return out


def _water_fill(weights: list[Fraction], pool: int, cap: int | None) -> list[Fraction]:
    """Proportional shares of `pool`, clipped at `cap` with the excess spread (weights sorted descending)."""
    rest_pool, rest_weight = Fraction(pool), sum(weights, Fraction(0))
    shares: list[Fraction] = []
    for w in weights:
        if cap is None or rest_pool * w < cap * rest_weight:
            break
        shares.append(Fraction(cap))
        rest_pool -= cap
        rest_weight -= w
    return shares + [rest_pool * w / rest_weight for w in weights[len(shares) :]]


def _feasible_prefix(ranked: list[tuple[str, Fraction]], pool: int, rules: AllocationRules) -> list:
    """The longest prefix, cut between distinct contributions, whose last member gets the minimum."""
    if rules.minimum_payout == 0 or not ranked:
        return ranked
    cuts = [i for i in range(1, len(ranked) + 1) if i == len(ranked) or ranked[i][1] != ranked[i - 1][1]]

    def ok(n: int) -> bool:
        return _water_fill([w for _, w in ranked[:n]], pool, rules.cap_per_client)[-1] >= rules.minimum_payout

    lo, hi = 0, len(cuts)  # invariant: cuts[:lo] pass, cuts[hi:] fail
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(cuts[mid]):
            lo = mid + 1
        else:
            hi = mid
    return ranked[: cuts[lo - 1]] if lo else []


def _largest_remainder(
    clients: list[str], weights: list[Fraction], shares: list[Fraction], total: int
) -> dict[str, int]:
    floors = [math.floor(s) for s in shares]
    leftover = total - sum(floors)
    order = sorted(range(len(clients)), key=lambda i: (-(shares[i] - floors[i]), -weights[i], clients[i]))
    for i in order[:leftover]:
        floors[i] += 1
    return dict(zip(clients, floors, strict=True))


def aggregate(rows: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Sum (client, value) rows per client: a period's sequence shares or token masses."""
    out: dict[str, float] = {}
    for client, value in rows:
        out[client] = out.get(client, 0.0) + float(value)
    return out


def aggregate_arrays(client_codes: np.ndarray, values: np.ndarray, clients: list[str]) -> dict[str, float]:
    """Vectorised `aggregate` for large periods: `client_codes[i]` indexes `clients`."""
    if client_codes.shape != values.shape:
        raise AllocationError(f"codes {client_codes.shape} and values {values.shape} differ in shape")
    if not np.all(np.isfinite(values)):
        raise AllocationError("contribution values must be finite")
    totals = np.bincount(client_codes, weights=values, minlength=len(clients))
    if len(totals) > len(clients):
        raise AllocationError("a client code is outside the client list")
    return {c: float(t) for c, t in zip(clients, totals, strict=True)}
