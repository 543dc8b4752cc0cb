"""Reward allocation as a pure function: contributions + pool + rules -> integer amounts.

No database here; `ledger.rewards.post_allocation` posts the result.

Contributions are non-negative weights per client for one period (the sum of
the platform's per-generation sequence shares by default, or token-level
attribution mass). They are converted to exact `Fraction`s (a float is taken
at its exact binary value, a numeric string or `Decimal` at its decimal
value), so the result never depends on float summation order.

Rules, applied in this order:
1. Suspended clients (``rules.excluded``) get nothing, nor do clients with a
   zero weight; flagged clients get nothing when ``flagged_policy="exclude"``
   and are allocated normally but *held* when it is ``"hold"``.
2. Water-filling under ``cap_per_client``: every client whose proportional
   quota reaches the cap gets exactly the cap, and the rest of the pool is
   shared in proportion among the others, repeatedly until no quota exceeds
   the cap.
3. Largest-remainder rounding: each uncapped client gets the floor of its
   quota, and the units left over go one each to the largest fractional
   parts; ties go to the smaller client id, so the result is deterministic.
   An uncapped quota is below the cap, so floor + 1 never exceeds it.
4. ``minimum_payout``: the smallest contributors (equal weights together)
   are dropped until everybody still paid gets at least the minimum; the
   dropped weight is shared among the others by steps 2-3.

The amounts sum exactly to the pool. The only exception is when the rules
make that impossible (no eligible client, every client capped, or the pool
below the minimum); then the difference is ``retained`` and stays in the
pool, so ``sum(amounts) + retained == pool`` always holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from ledger import canonical
from ledger.errors import InvalidInput

FLAGGED_POLICIES = ("hold", "exclude")
Weight = int | float | Decimal | Fraction | str


@dataclass(frozen=True)
class AllocationRules:
    minimum_payout: int = 0
    cap_per_client: int | None = None
    excluded: frozenset[str] = frozenset()  # suspended clients: nothing, share redistributed
    flagged: frozenset[str] = frozenset()  # clients under an open or confirmed flag
    flagged_policy: str = "hold"  # "hold": allocate into a held account; "exclude": like suspended

    def __post_init__(self) -> None:
        canonical.amount(self.minimum_payout, "minimum_payout", allow_zero=True)
        if self.minimum_payout < 0:
            raise InvalidInput(f"minimum_payout must be >= 0, got {self.minimum_payout}")
        if self.cap_per_client is not None:
            canonical.amount(self.cap_per_client, "cap_per_client")
            if self.cap_per_client < 0:
                raise InvalidInput(f"cap_per_client must be > 0, got {self.cap_per_client}")
        if self.flagged_policy not in FLAGGED_POLICIES:
            raise InvalidInput(f"flagged_policy must be one of {FLAGGED_POLICIES}, got {self.flagged_policy!r}")
        object.__setattr__(self, "excluded", _client_set(self.excluded, "excluded"))
        object.__setattr__(self, "flagged", _client_set(self.flagged, "flagged"))

    def as_dict(self) -> dict:
        return {
            "minimum_payout": self.minimum_payout,
            "cap_per_client": self.cap_per_client,
            "excluded": sorted(self.excluded),
            "flagged": sorted(self.flagged),
            "flagged_policy": self.flagged_policy,
        }


def _client_set(values: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(values, str):
        raise InvalidInput(f"{what} must be a collection of client ids, not a single string")
    return frozenset(canonical.client_id(v) for v in values)


@dataclass(frozen=True)
class Allocation:
    """Per-client integer amounts; ``sum(amounts.values()) + retained == pool``."""

    pool: int
    amounts: dict[str, int]  # every client that gets money (> 0), held ones included
    held: dict[str, int]  # the subset of `amounts` that goes to held accounts
    retained: int  # what the rules could not give to anyone; stays in the pool
    not_paid: dict[str, str] = field(default_factory=dict)  # client -> why it got nothing
    capped: frozenset[str] = frozenset()

    @property
    def payable(self) -> dict[str, int]:
        return {c: a for c, a in self.amounts.items() if c not in self.held}

    @property
    def total(self) -> int:
        return sum(self.amounts.values())


def to_fraction(value: Weight, where: str = "weight") -> Fraction:
    """An exact non-negative weight; NaN, infinities, negatives and non-numbers are refused."""
    if isinstance(value, bool):
        raise InvalidInput(f"{where} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{where} is {value}; weights must be finite")
    try:
        result = Fraction(Decimal(value)) if isinstance(value, str) else Fraction(value)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise InvalidInput(f"{where} must be a number, got {value!r}") from exc
    if result < 0:
        raise InvalidInput(f"{where} is negative ({value}); contributions must be >= 0")
    return result


def allocate(contributions: Mapping[str, Weight], pool: int, rules: AllocationRules | None = None) -> Allocation:
    """Split `pool` minor units over `contributions` under `rules` (see module docstring)."""
    rules = rules or AllocationRules()
    canonical.amount(pool, "pool", allow_zero=True)
    if pool < 0:
        raise InvalidInput(f"pool must be >= 0, got {pool}")
    weights, not_paid = _eligible(contributions, rules)
    amounts, capped = _allocate_with_minimum(weights, pool, rules, not_paid)
    held_clients = rules.flagged if rules.flagged_policy == "hold" else frozenset()
    held = {c: a for c, a in amounts.items() if c in held_clients}
    return Allocation(pool=pool, amounts=amounts, held=held, retained=pool - sum(amounts.values()),
                      not_paid=not_paid, capped=capped)


def _eligible(contributions: Mapping[str, Weight], rules: AllocationRules) -> tuple[dict, dict]:
    weights: dict[str, Fraction] = {}
    not_paid: dict[str, str] = {}
    for client, value in contributions.items():
        canonical.client_id(client)
        weight = to_fraction(value, f"contribution of {client}")
        if client in rules.excluded:
            not_paid[client] = "suspended"
        elif client in rules.flagged and rules.flagged_policy == "exclude":
            not_paid[client] = "flagged"
        elif weight == 0:
            not_paid[client] = "zero contribution"
        else:
            weights[client] = weight
    return weights, not_paid


def _allocate_with_minimum(weights: dict[str, Fraction], pool: int, rules: AllocationRules,
                           not_paid: dict[str, str]) -> tuple[dict[str, int], frozenset[str]]:
    """Pay the largest set of top contributors in which everybody reaches the minimum.

    Clients are ranked by weight (equal weights stand or fall together). Adding
    a smaller contributor only lowers the others' quotas, so feasibility is
    monotone in the number of ranks kept and a binary search finds the cut.
    """
    groups = _rank_groups(weights)
    lo, hi = 0, len(groups)  # invariant: keeping `lo` ranks is feasible
    if _feasible(weights, groups, hi, pool, rules) is None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _feasible(weights, groups, mid, pool, rules) is None:
                hi = mid
            else:
                lo = mid
        hi = lo
    amounts, capped = _feasible(weights, groups, hi, pool, rules)
    for group in groups[hi:]:
        not_paid.update({client: "below minimum payout" for client in group})
    not_paid.update({c: "rounds to zero" for c, a in amounts.items() if a == 0})
    return {c: a for c, a in amounts.items() if a > 0}, capped


def _rank_groups(weights: Mapping[str, Fraction]) -> list[list[str]]:
    groups: list[list[str]] = []
    for client in sorted(weights, key=lambda c: (-weights[c], c)):
        if groups and weights[groups[-1][0]] == weights[client]:
            groups[-1].append(client)
        else:
            groups.append([client])
    return groups


def _feasible(weights, groups, keep: int, pool: int, rules: AllocationRules):
    """The allocation over the top `keep` ranks, or None if someone in it falls below the minimum."""
    kept = {c: weights[c] for group in groups[:keep] for c in group}
    amounts, capped = _water_fill(kept, pool, rules.cap_per_client)
    if rules.minimum_payout and any(a < rules.minimum_payout for a in amounts.values()):
        return None
    return amounts, capped


def _water_fill(weights: dict[str, Fraction], pool: int, cap: int | None) -> tuple[dict[str, int], frozenset]:
    """Capped proportional split with largest-remainder rounding; sums to min(pool, n * cap)."""
    amounts: dict[str, int] = {}
    free = dict(weights)
    remaining = pool
    while free and cap is not None:
        total = sum(free.values())
        over = [c for c, w in free.items() if remaining * w >= cap * total]
        if not over:
            break
        for client in over:
            amounts[client] = cap
            remaining -= cap
            del free[client]
        if remaining <= 0:  # can only reach 0: a client is capped only if its quota >= cap
            break
    capped = frozenset(amounts)
    amounts.update(largest_remainder(free, max(remaining, 0)))
    return amounts, capped


def largest_remainder(weights: Mapping[str, Fraction], total: int) -> dict[str, int]:
    """Integers proportional to `weights` summing exactly to `total` (ties: smaller client id first)."""
    weight_sum = sum(weights.values())
    if not weights or weight_sum == 0:
        return {}
    quotas = {c: total * w / weight_sum for c, w in weights.items()}
    result = {c: math.floor(q) for c, q in quotas.items()}
    leftover = total - sum(result.values())
    order = sorted(quotas, key=lambda c: (-(quotas[c] - result[c]), c))
    for client in order[:leftover]:
        result[client] += 1
    return result


def contribution_digest(contributions: Mapping[str, Weight]) -> str:
    """A hash of the exact contributions, so an idempotent retry can tell a changed input apart."""
    exact = {c: str(to_fraction(w, f"contribution of {c}")) for c, w in contributions.items()}
    return canonical.request_hash(exact)


def aggregate(rows: Iterable[tuple[str, Weight]]) -> dict[str, Fraction]:
    """Sum (client id, share) rows exactly, e.g. one row per generation."""
    totals: dict[str, Fraction] = {}
    for client, share in rows:
        canonical.client_id(client)
        totals[client] = totals.get(client, Fraction(0)) + to_fraction(share, f"share of {client}")
    return totals
