"""Money movements of the reward cycle: fund the pool, post an allocation, release or forfeit holds.

Account flow of one federation and currency::

    funding --fund_pool--> pool --post_allocation--> payable[c] --export--> paid_out[c]
                             ^                   \\-> held[c] (flagged c) --release_held--> payable[c]
                             \\--------------------------------------------- forfeit_held --/

`post_allocation` is one balanced transaction whose idempotency key defaults
to ``allocation:<period>:<currency>``, so a period is allocated once; its
request hash covers the inputs (pool, rules, basis and an exact digest of the
contributions). Clients with an open or confirmed flag in the ledger are
added to ``rules.flagged`` at posting time, so their amounts go to `held`.
A retry with the same inputs returns the original even if flags changed since.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import canonical, chain, journal
from ledger.allocation import Allocation, AllocationRules, Weight, allocate, contribution_digest
from ledger.errors import HoldActive, InsufficientFunds, InvalidInput, NothingToAllocate
from ledger.flags import blocking_clients, client_states
from ledger.journal import Leg, Receipt, transfer
from ledger.models import Account, Entry

BASES = ("sequence_share", "token_mass")


def fund_pool(session: Session, *, federation: str, amount: int, currency: str, idempotency_key: str,
              description: str = "pool funding") -> Receipt:
    """Move `amount` from the federation's external funding account into its reward pool."""
    return journal.post_transaction(
        session, federation=federation, kind="funding", legs=transfer(("funding", ""), ("pool", ""), amount, currency),
        idempotency_key=idempotency_key, description=description,
    )


@dataclass(frozen=True)
class AllocationReceipt:
    allocation: Allocation
    receipt: Receipt

    @property
    def replayed(self) -> bool:
        return self.receipt.replayed


def post_allocation(session: Session, *, federation: str, period: str, currency: str, pool_amount: int,
                    contributions: Mapping[str, Weight], rules: AllocationRules | None = None,
                    basis: str = "sequence_share", idempotency_key: str | None = None) -> AllocationReceipt:
    """Allocate `pool_amount` over a period's contributions and post it as one transaction."""
    rules = rules or AllocationRules()
    request = _allocation_request(federation, period, currency, pool_amount, contributions, rules, basis)
    key = canonical.idempotency_key(idempotency_key or f"allocation:{period}:{currency}")
    head = chain.lock_head(session, federation)
    request_hash = canonical.request_hash(request)
    existing = journal.find_replay(session, federation, key, request_hash)
    if existing is not None:
        return AllocationReceipt(_stored_allocation(existing), Receipt.of(existing, replayed=True))
    flagged = rules.flagged | blocking_clients(session, federation)
    result = allocate(contributions, pool_amount, replace(rules, flagged=flagged))
    if result.total == 0:
        raise NothingToAllocate(f"nothing to allocate for period {period!r}: {_why_nothing(result)}")
    _check_funds(session, federation, currency, result.total)
    receipt = journal.append_transaction(
        session, head, kind="allocation", legs=_allocation_legs(result, currency), idempotency_key=key,
        request_hash=request_hash, description=f"reward allocation for period {period}",
        metadata={**request, "retained": result.retained, "held": sorted(result.held),
                  "not_paid": result.not_paid, "capped": sorted(result.capped)},
    )
    return AllocationReceipt(result, receipt)


def _allocation_request(federation, period, currency, pool_amount, contributions, rules, basis) -> dict:
    canonical.federation_id(federation)
    canonical.amount(pool_amount, "pool_amount")
    if pool_amount < 0:
        raise InvalidInput(f"pool_amount must be positive, got {pool_amount}")
    if basis not in BASES:
        raise InvalidInput(f"basis must be one of {BASES}, got {basis!r}")
    return {"period": canonical.period_label(period), "currency": canonical.currency_code(currency),
            "pool_amount": pool_amount, "basis": basis, "rules": rules.as_dict(),
            "clients": len(contributions), "contributions_sha256": contribution_digest(contributions)}


def _why_nothing(result: Allocation) -> str:
    if result.pool == 0:
        return "the pool amount is 0"
    if not result.not_paid:
        return "no contributions"
    reasons = sorted(set(result.not_paid.values()))
    return f"every client is excluded ({', '.join(reasons)})"


def _allocation_legs(result: Allocation, currency: str) -> list[Leg]:
    legs = [Leg("pool", "", -result.total, currency)]
    for client in sorted(result.amounts):
        kind = "held" if client in result.held else "payable"
        legs.append(Leg(kind, client, result.amounts[client], currency))
    return legs


def _check_funds(session: Session, federation: str, currency: str, needed: int) -> None:
    available = journal.account_balance(session, federation, "pool", "", currency)
    if available < needed:
        raise InsufficientFunds(f"the {currency} pool of {federation!r} holds {available}, but the allocation "
                                f"needs {needed}; fund it first (fund_pool / `allocate --fund`)")


def _stored_allocation(txn) -> Allocation:
    amounts = {e.account.client_id: e.amount for e in txn.entries if e.account.kind in ("payable", "held")}
    held = {e.account.client_id: e.amount for e in txn.entries if e.account.kind == "held"}
    meta = txn.meta
    return Allocation(pool=meta["pool_amount"], amounts=amounts, held=held, retained=meta["retained"],
                      not_paid=dict(meta["not_paid"]), capped=frozenset(meta["capped"]))


def held_balances(session: Session, federation: str, client_id: str) -> dict[str, int]:
    """Held amount per currency for one client (only currencies with a non-zero balance)."""
    rows = journal.balances(session, federation, client_id=client_id)
    return {b.currency: b.balance for b in rows if b.kind == "held" and b.balance != 0}


def release_held(session: Session, *, federation: str, client_id: str, actor: str = "",
                 idempotency_key: str | None = None) -> list[Receipt]:
    """Move a cleared client's held amounts to its payable account (one transaction per currency)."""
    canonical.client_id(client_id)
    states = client_states(session, federation, client_id)
    if states & {"open", "confirmed"}:
        raise HoldActive(f"client {client_id!r} has {' and '.join(sorted(states & {'open', 'confirmed'}))} "
                         "flags; dismiss them before releasing its held payouts")
    return _move_held(session, federation, client_id, "payable", "release", actor, idempotency_key)


def forfeit_held(session: Session, *, federation: str, client_id: str, actor: str = "",
                 idempotency_key: str | None = None) -> list[Receipt]:
    """Return a client's held amounts to the pool; only for a client with a confirmed flag."""
    canonical.client_id(client_id)
    if "confirmed" not in client_states(session, federation, client_id):
        raise HoldActive(f"client {client_id!r} has no confirmed flag; only confirmed findings forfeit payouts")
    return _move_held(session, federation, client_id, "pool", "forfeit", actor, idempotency_key)


def _move_held(session: Session, federation: str, client_id: str, to: str, kind: str, actor: str,
               idempotency_key: str | None) -> list[Receipt]:
    chain.lock_head(session, federation)  # balances must not move between reading and posting
    receipts = []
    for currency, amount in sorted(held_balances(session, federation, client_id).items()):
        if amount < 0:
            continue  # a clawback left the hold negative; nothing to release
        destination = ("pool", "") if to == "pool" else ("payable", client_id)
        last = _last_held_entry(session, federation, client_id, currency)
        key = idempotency_key and f"{idempotency_key}:{currency}"
        receipts.append(journal.post_transaction(
            session, federation=federation, kind=kind, legs=transfer(("held", client_id), destination, amount, currency),
            idempotency_key=key or f"{kind}:{client_id}:{currency}:through-entry-{last}",
            description=f"{kind} of held payouts of {client_id}", metadata={"client_id": client_id, "actor": actor},
        ))
    return receipts


def _last_held_entry(session: Session, federation: str, client_id: str, currency: str) -> int:
    return session.execute(
        select(Entry.id).join(Account, Entry.account_id == Account.id).where(
            Account.federation == federation, Account.kind == "held", Account.client_id == client_id,
            Account.currency == currency).order_by(Entry.id.desc()).limit(1)
    ).scalar_one()
