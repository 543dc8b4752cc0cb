"""Writes of the reward cycle: settle a period, review flags, export payouts, set reward plans.

`period_settle` runs inside ONE ``transaction.atomic()``:

1. lock the federation row (settlements of a federation run one at a time);
2. a settled period with the same request hash is returned as it is (a
   replay; nothing is written), with a different one is refused;
3. apply the harm policies to the period's generations (new `HarmMark`s);
4. screen: evidence (harmful generations' top-1 vs baseline share) and
   updates (client slices of the period's rounds vs the robust centre);
5. on Django's own connection (`bridge.ledger_session`): record the
   findings as ledger flags with their evidence, fund the pool, post the
   allocation (the ledger holds the amounts of flagged clients);
6. write the `Settlement` row.

Any exception anywhere rolls back steps 3-6 on both sides. The ledger's
idempotency keys (``funding:<period>:<currency>``,
``allocation:<period>:<currency>``) are a second guard: even without the
Settlement row, a period can never be paid twice.

A payout export stores the ledger's CSV/JSON in the ``artifacts`` storage.
Files are written before the transaction commits; if it then rolls back, the
orphaned files carry no row and the next export of that period overwrites
them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction
from registry.errors import Conflict, InvalidInput, NotFound
from registry.models import Client, Federation

import ledger
from ledger.flags import Review

from .bridge import ledger_session
from .errors import ledger_errors
from .harm import check_actor, harm_policies_apply
from .models import PayoutExport, RewardPlan, Settlement
from .periods import CADENCES, Period
from .rules import SettlementRules, SettleRequest, check_terms
from .screening import ScreeningOutcome, screen_period
from .selectors import period_contributions, suspended_clients

FLAG_STATES = ("open", "confirmed", "dismissed")


@dataclass(frozen=True)
class SettleResult:
    settlement: Settlement
    replayed: bool  # the period was already settled with this request; nothing was written


@dataclass(frozen=True)
class Posted:
    allocation: ledger.AllocationReceipt
    funding: ledger.Receipt | None


def period_settle(*, federation: Federation, period_start: datetime, period_end: datetime, pool_amount: int,
                  currency: str, basis: str = "sequence_share", rules: SettlementRules | None = None,
                  actor: str) -> SettleResult:
    """Screen and allocate one period of a federation, ledger and Django together (see module docstring)."""
    actor = check_actor(actor)
    request = SettleRequest(federation, Period(period_start, period_end), pool_amount, currency, basis,
                            rules or SettlementRules())
    with transaction.atomic():
        Federation.objects.select_for_update().get(pk=federation.pk)
        existing = Settlement.objects.filter(federation=federation, period=request.period.label,
                                             currency=currency).first()
        if existing is not None and existing.status == Settlement.Status.SETTLED:
            return SettleResult(_replay(existing, request), replayed=True)
        _check_known_clients(federation, request.rules.exclude)
        harm_policies_apply(federation=federation, period=request.period)
        outcome = screen_period(federation=federation, period=request.period, rules=request.rules)
        contributions = period_contributions(federation=federation, period=request.period, basis=basis,
                                             token_weight=request.rules.token_weight)
        with ledger_session() as session, ledger_errors():
            flags = ledger.record_findings(session, federation=federation.slug, period=request.period.label,
                                           findings=outcome.findings, actor=actor)
            posted = _post(session, request, contributions) if contributions else None
        settlement = _save_settlement(existing, request, outcome, flags, posted, actor)
    return SettleResult(settlement, replayed=False)


def _replay(existing: Settlement, request: SettleRequest) -> Settlement:
    if existing.request_hash != request.hash:
        raise Conflict("settlement_conflict", f"period {existing.period} ({existing.currency}) of "
                       f"{existing.federation.slug!r} was already settled with pool {existing.pool_amount}, basis "
                       f"{existing.basis} and rules {existing.rules}; a different request for a settled period "
                       "is refused (correct it with a ledger reversal)", field="period")
    return existing


def _check_known_clients(federation: Federation, client_ids: tuple[str, ...]) -> None:
    known = set(Client.objects.filter(federation=federation, client_id__in=client_ids)
                .values_list("client_id", flat=True))
    missing = sorted(set(client_ids) - known)
    if missing:
        raise NotFound("unknown_client", f"no client {missing[0]!r} in federation {federation.slug!r}",
                       field="exclude")


def _post(session, request: SettleRequest, contributions: dict) -> Posted:
    label, currency, slug = request.period.label, request.currency, request.federation.slug
    funding = None
    if request.rules.fund_pool:
        funding = ledger.fund_pool(session, federation=slug, amount=request.pool_amount, currency=currency,
                                   idempotency_key=f"funding:{label}:{currency}")
    allocation = ledger.post_allocation(
        session, federation=slug, period=label, currency=currency, pool_amount=request.pool_amount,
        contributions=contributions, basis=request.basis,
        rules=request.rules.allocation_rules(suspended_clients(federation=request.federation)),
        idempotency_key=f"allocation:{label}:{currency}",
    )
    return Posted(allocation, funding)


def _save_settlement(existing: Settlement | None, request: SettleRequest, outcome: ScreeningOutcome,
                     flags: list[ledger.FlagView], posted: Posted | None, actor: str) -> Settlement:
    settlement = existing or Settlement(federation=request.federation, period=request.period.label,
                                        currency=request.currency)
    settlement.period_start, settlement.period_end = request.period.start, request.period.end
    settlement.basis, settlement.pool_amount, settlement.rules = request.basis, request.pool_amount, \
        request.rules.as_dict()
    settlement.request_hash, settlement.actor = request.hash, actor
    settlement.generations_count, settlement.harmful_count = outcome.generations, outcome.harmful
    settlement.rounds_count, settlement.screening = outcome.rounds, outcome.summary()
    settlement.flags_count, settlement.flag_ids = len(flags), [f.id for f in flags]
    settlement.status = Settlement.Status.SETTLED if posted else Settlement.Status.EMPTY
    if posted is not None:
        _copy_allocation(settlement, posted)
    settlement.save()
    return settlement


def _copy_allocation(settlement: Settlement, posted: Posted) -> None:
    allocation, receipt = posted.allocation.allocation, posted.allocation.receipt
    settlement.allocated_amount, settlement.retained_amount = allocation.total, allocation.retained
    settlement.held_amount = sum(allocation.held.values())
    settlement.clients_paid, settlement.clients_held = len(allocation.payable), len(allocation.held)
    settlement.ledger_transaction_id, settlement.ledger_seq, settlement.ledger_hash = \
        receipt.id, receipt.seq, receipt.hash
    settlement.funding_transaction_id = posted.funding.id if posted.funding else None


# ---- flags ---------------------------------------------------------------------------------------


def flag_review(*, federation: Federation, flag_id: int, state: str, actor: str, note: str = "") -> Review:
    """Move a ledger flag to `state`; dismissing a client's last blocking flag releases its held payouts."""
    actor = check_actor(actor)
    if state not in FLAG_STATES:
        raise InvalidInput("invalid_state", f"state must be one of {FLAG_STATES}, got {state!r}", field="state")
    if isinstance(flag_id, bool) or not isinstance(flag_id, int) or flag_id <= 0:
        raise InvalidInput("invalid_flag", f"flag id must be a positive integer, got {flag_id!r}", field="flag_id")
    with transaction.atomic(), ledger_session() as session, ledger_errors():
        try:
            return ledger.review_flag(session, federation=federation.slug, flag_id=flag_id, state=state,
                                      actor=actor, note=note)
        except ledger.NotFound as exc:
            raise NotFound("unknown_flag", str(exc), field="flag_id") from exc


def held_forfeit(*, federation: Federation, client_id: str, actor: str) -> list[ledger.Receipt]:
    """Return a client's held payouts to the pool; the ledger allows it only under a confirmed flag."""
    actor = check_actor(actor)
    _check_known_clients(federation, (client_id,))
    with transaction.atomic(), ledger_session() as session, ledger_errors():
        return ledger.forfeit_held(session, federation=federation.slug, client_id=client_id, actor=actor)


# ---- payout exports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    export: PayoutExport
    replayed: bool  # exported before: the same files, nothing paid again


def payout_export(*, settlement: Settlement, actor: str) -> ExportResult:
    """Export the payout run of a settled period to the artifact storage (again: the identical files)."""
    actor = check_actor(actor)
    if settlement.status != Settlement.Status.SETTLED:
        raise Conflict("nothing_settled", f"period {settlement.period} allocated nothing (status "
                       f"{settlement.status}); there is nothing to export", field="settlement_id")
    with transaction.atomic():
        Federation.objects.select_for_update().get(pk=settlement.federation_id)
        existing = PayoutExport.objects.filter(settlement=settlement).first()
        with ledger_session() as session, ledger_errors():
            files = ledger.export_payouts(session, federation=settlement.federation.slug,
                                          period=settlement.period, currency=settlement.currency)
        if existing is not None:
            return ExportResult(_check_replay(existing, files), replayed=True)
        return ExportResult(_store_export(settlement, files, actor), replayed=False)


def export_names(settlement: Settlement) -> tuple[str, str]:
    stem = f"payouts/{settlement.federation.slug}/payout-{settlement.period}-{settlement.currency}"
    return f"{stem}.csv", f"{stem}.json"


def _check_replay(export: PayoutExport, files: ledger.PayoutFiles) -> PayoutExport:
    if (files.csv_sha256, files.json_sha256) != (export.csv_sha256, export.json_sha256):
        raise Conflict("export_mismatch", f"the ledger's payout run {export.period} no longer renders to the "
                       "SHA-256s recorded on export; run `python -m ledger verify`", field="settlement_id")
    for name, data, digest in ((export.csv_path, files.csv, export.csv_sha256),
                               (export.json_path, files.json, export.json_sha256)):
        if _stored_sha256(name) != digest:  # lost or altered in storage: the ledger's bytes are authoritative
            _write(name, data)
    return export


def _store_export(settlement: Settlement, files: ledger.PayoutFiles, actor: str) -> PayoutExport:
    csv_name, json_name = export_names(settlement)
    written = []
    try:
        for name, data in ((csv_name, files.csv), (json_name, files.json)):
            _write(name, data)
            written.append(name)
        return PayoutExport.objects.create(
            settlement=settlement, federation_id=settlement.federation_id, period=settlement.period,
            currency=settlement.currency, ledger_seq=files.transaction_seq, csv_path=csv_name, json_path=json_name,
            csv_sha256=files.csv_sha256, json_sha256=files.json_sha256, total_amount=files.total,
            lines_count=len(files.lines), actor=actor)
    except BaseException:
        for name in written:
            storages["artifacts"].delete(name)
        raise


def _write(name: str, data: bytes) -> None:
    storage = storages["artifacts"]
    if storage.exists(name):  # a leftover of a rolled-back export, or a damaged copy: replace it
        storage.delete(name)
    saved = storage.save(name, ContentFile(data))
    if saved != name:
        raise RuntimeError(f"artifact storage stored {name!r} as {saved!r}")


def _stored_sha256(name: str) -> str | None:
    storage = storages["artifacts"]
    if not storage.exists(name):
        return None
    with storage.open(name, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    name: str
    content: bytes
    sha256: str
    content_type: str


def payout_file(*, export: PayoutExport, fmt: str) -> StoredFile:
    """The stored CSV or JSON of an export, checked against its recorded SHA-256."""
    if fmt not in ("csv", "json"):
        raise InvalidInput("invalid_format", f"format must be csv or json, got {fmt!r}", field="format")
    name, digest = (export.csv_path, export.csv_sha256) if fmt == "csv" else (export.json_path, export.json_sha256)
    storage = storages["artifacts"]
    if not storage.exists(name):
        raise NotFound("export_file_missing", f"{name} is missing from the artifact storage; export the period "
                       "again to restore it from the ledger", field="export_id")
    with storage.open(name, "rb") as handle:
        content = handle.read()
    if hashlib.sha256(content).hexdigest() != digest:
        raise Conflict("export_tampered", f"{name} no longer matches its recorded SHA-256 {digest}; export the "
                       "period again to restore it from the ledger", field="export_id")
    return StoredFile(name.rsplit("/", 1)[-1], content, digest,
                      "text/csv" if fmt == "csv" else "application/json")


# ---- reward plans (what the scheduled settlement pays) -------------------------------------------


def reward_plan_set(*, federation: Federation, pool_amount: int, currency: str, cadence: str = "day",
                    basis: str = "sequence_share", rules: SettlementRules | None = None,
                    active: bool = True) -> RewardPlan:
    if cadence not in CADENCES:
        raise InvalidInput("invalid_cadence", f"cadence must be one of {CADENCES}, got {cadence!r}", field="cadence")
    rules = rules or SettlementRules()
    check_terms(federation, pool_amount, currency, basis)
    plan, _ = RewardPlan.objects.update_or_create(federation=federation, defaults={
        "pool_amount": pool_amount, "currency": currency, "cadence": cadence, "basis": basis,
        "rules": rules.as_dict(), "active": active})
    return plan


def plan_settle(*, federation_id: int, period_start: datetime, period_end: datetime) -> SettleResult:
    """Settle one period of a federation under its reward plan (the scheduled task's service)."""
    plan = RewardPlan.objects.select_related("federation").filter(federation_id=federation_id).first()
    if plan is None:
        raise NotFound("no_reward_plan", f"federation {federation_id} has no reward plan", field="federation")
    return period_settle(federation=plan.federation, period_start=period_start, period_end=period_end,
                         pool_amount=plan.pool_amount, currency=plan.currency, basis=plan.basis,
                         rules=SettlementRules.from_dict(plan.rules), actor="schedule")
