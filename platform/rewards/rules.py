"""What a settlement is asked to do, validated before anything is read or written.

`SettlementRules` gathers the allocation rules (minimum payout, cap, extra
exclusions, what happens to flagged clients) and the screening knobs. A
`SettleRequest` adds the period, pool, currency and basis; its hash is stored
with the `Settlement`, so re-running a settled period with the same request
is a replay and with a different one is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from registry.errors import InvalidInput
from registry.models import Federation

import ledger
from ledger import canonical

from .models import BASES
from .periods import Period
from .selectors import TOKEN_WEIGHTS

INT64_MAX = 2**63 - 1


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput("invalid_rules", message, field=field)


@dataclass(frozen=True)
class SettlementRules:
    minimum_payout: int = 0
    cap_per_client: int | None = None
    exclude: tuple[str, ...] = ()  # client ids paid nothing this period (suspended clients always are)
    flagged_policy: str = "hold"  # "hold": flagged clients' amounts go to held; "exclude": they get nothing
    token_weight: str = "count"  # token_mass basis: top-1 token "count", or the sum of their "top_share"
    evidence_q: float = 0.05
    evidence_min_count: int = 2
    evidence_baseline: str = "benign"  # "benign": top-1 rate on unmarked generations; "fedavg": num_examples
    update_q: float = 0.05
    update_min_median_z: float = 3.0
    update_min_clients: int = 4
    screen_updates: bool = True
    fund_pool: bool = True  # fund the ledger pool with pool_amount as part of the settlement

    def __post_init__(self) -> None:
        self._check_amounts()
        object.__setattr__(self, "exclude", tuple(sorted(set(_client_ids(self.exclude)))))
        _choice("flagged_policy", self.flagged_policy, ("hold", "exclude"))
        _choice("token_weight", self.token_weight, TOKEN_WEIGHTS)
        _choice("evidence_baseline", self.evidence_baseline, ("benign", "fedavg"))
        for name in ("evidence_q", "update_q"):
            if not _number(getattr(self, name)) or not 0 < getattr(self, name) < 1:
                raise _bad(name, f"{name} must be a number in (0, 1), got {getattr(self, name)!r}")
        if not _number(self.update_min_median_z):
            raise _bad("update_min_median_z", "update_min_median_z must be a finite number")
        _integer("evidence_min_count", self.evidence_min_count, 1)
        _integer("update_min_clients", self.update_min_clients, 3)
        for name in ("screen_updates", "fund_pool"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, f"{name} must be true or false")

    def _check_amounts(self) -> None:
        _integer("minimum_payout", self.minimum_payout, 0)
        if self.cap_per_client is not None:
            _integer("cap_per_client", self.cap_per_client, 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exclude": list(self.exclude)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SettlementRules:
        data = dict(data or {})
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise _bad(unknown[0], f"unknown rule(s) {unknown}; allowed: {sorted(allowed)}")
        if isinstance(data.get("exclude"), list):  # JSON has no tuples; anything else is refused below
            data["exclude"] = tuple(data["exclude"])
        return cls(**data)

    def allocation_rules(self, suspended: set[str]) -> ledger.AllocationRules:
        return ledger.AllocationRules(minimum_payout=self.minimum_payout, cap_per_client=self.cap_per_client,
                                      excluded=frozenset(self.exclude) | frozenset(suspended),
                                      flagged_policy=self.flagged_policy)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= INT64_MAX:
        raise _bad(name, f"{name} must be an integer >= {minimum}, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _bad(name, f"{name} must be one of {allowed}, got {value!r}")


def _client_ids(values: Any) -> list[str]:
    if isinstance(values, str) or not isinstance(values, list | tuple | set | frozenset):
        raise _bad("exclude", f"exclude must be a list of client ids, got {values!r}")
    try:
        return [canonical.client_id(v) for v in values]
    except ledger.InvalidInput as exc:
        raise _bad("exclude", str(exc)) from exc


@dataclass(frozen=True)
class SettleRequest:
    federation: Federation
    period: Period
    pool_amount: int
    currency: str
    basis: str
    rules: SettlementRules

    def __post_init__(self) -> None:
        check_terms(self.federation, self.pool_amount, self.currency, self.basis)
        if not isinstance(self.rules, SettlementRules):
            raise InvalidInput("invalid_rules", "rules must be SettlementRules", field="rules")

    def as_dict(self) -> dict[str, Any]:
        return {"period": self.period.label, "pool_amount": self.pool_amount, "currency": self.currency,
                "basis": self.basis, "rules": self.rules.as_dict()}

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


def check_terms(federation: Federation, pool_amount: int, currency: str, basis: str) -> None:
    """The federation, pool, currency and basis of a settlement or reward plan."""
    if not isinstance(federation, Federation) or federation.pk is None:
        raise InvalidInput("unknown_federation", "federation must be a saved Federation", field="federation")
    _check_ledger_name(canonical.federation_id, federation.slug, "federation")
    if isinstance(pool_amount, bool) or not isinstance(pool_amount, int) or not 0 < pool_amount <= INT64_MAX:
        raise InvalidInput("invalid_pool", f"pool_amount must be a positive integer of minor units "
                           f"(e.g. cents), got {pool_amount!r}", field="pool_amount")
    _check_ledger_name(canonical.currency_code, currency, "currency")
    if basis not in BASES:
        raise InvalidInput("invalid_basis", f"basis must be one of {BASES}, got {basis!r}", field="basis")


def _check_ledger_name(check, value: Any, field: str) -> None:
    try:
        check(value)
    except ledger.InvalidInput as exc:
        raise InvalidInput(f"invalid_{field}", str(exc), field=field) from exc
