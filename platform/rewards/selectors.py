"""Reads for the reward cycle: a period's contributions and evidence, settlements, exports and flags.

Only the *latest* attribution run of each generation counts (a re-run under a
new method version or config stands beside the old one; counting both would
pay a generation twice). Contributions are summed in Postgres as ``numeric``
(exact, so the same rows always give the same sum whatever the scan order,
and a retried settlement hashes to the same ledger request).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from audits.models import AttributionRun, ClientAttribution, TokenAttribution
from django.db import transaction
from django.db.models import Count, DecimalField, Exists, OuterRef, QuerySet, Sum
from django.db.models.functions import Cast
from registry.errors import InvalidInput, NotFound
from registry.models import Client, ClientUpdate, Federation, Round

import ledger
from ledger import EvidenceRecord, FlagView

from .bridge import ledger_session
from .errors import ledger_errors
from .models import HarmMark, HarmPolicy, PayoutExport, Settlement
from .periods import Period

EXACT = DecimalField(max_digits=38, decimal_places=18)
TOKEN_WEIGHTS = ("count", "top_share")


def latest_runs(*, federation: Federation, period: Period) -> QuerySet[AttributionRun]:
    """The newest run of every generation created in the period."""
    newer = AttributionRun.objects.filter(generation=OuterRef("generation"), pk__gt=OuterRef("pk"))
    return AttributionRun.objects.filter(
        federation=federation, generation__created_at__gte=period.start, generation__created_at__lt=period.end
    ).exclude(Exists(newer))


def sequence_contributions(*, federation: Federation, period: Period) -> dict[str, Decimal]:
    """Per client, the sum of its sequence shares over the period's generations."""
    rows = (
        ClientAttribution.objects.filter(run__in=latest_runs(federation=federation, period=period).values("pk"))
        .values("client__client_id").annotate(total=Sum(Cast("share", EXACT))).order_by()
    )
    return {r["client__client_id"]: r["total"] for r in rows if r["total"]}


def token_contributions(*, federation: Federation, period: Period, weight: str = "count") -> dict[str, Decimal]:
    """Per client, its token mass: tokens where it is top-1 (`count`) or the sum of those top shares."""
    if weight not in TOKEN_WEIGHTS:
        raise InvalidInput("invalid_rules", f"token_weight must be one of {TOKEN_WEIGHTS}, got {weight!r}",
                           field="token_weight")
    measure = Count("id") if weight == "count" else Sum(Cast("top_share", EXACT))
    rows = (
        TokenAttribution.objects.filter(run__in=latest_runs(federation=federation, period=period).values("pk"))
        .values("top_client__client_id").annotate(total=measure).order_by()
    )
    return {r["top_client__client_id"]: Decimal(r["total"]) for r in rows if r["total"]}


def period_contributions(*, federation: Federation, period: Period, basis: str, token_weight: str) -> dict:
    if basis == "token_mass":
        return token_contributions(federation=federation, period=period, weight=token_weight)
    return sequence_contributions(federation=federation, period=period)


def period_evidence(*, federation: Federation, period: Period) -> list[EvidenceRecord]:
    """One ledger `EvidenceRecord` per attributed generation of the period, harmful when marked."""
    runs = list(latest_runs(federation=federation, period=period)
                .values_list("pk", "generation_id", "round__number").order_by("generation_id"))
    run_ids = [pk for pk, _, _ in runs]
    shares: dict[int, dict[str, float]] = defaultdict(dict)
    for run_id, client, share in ClientAttribution.objects.filter(run_id__in=run_ids).values_list(
            "run_id", "client__client_id", "share"):
        shares[run_id][client] = share
    tokens: dict[int, list[str]] = defaultdict(list)
    for run_id, client in TokenAttribution.objects.filter(run_id__in=run_ids).order_by("run_id", "position") \
            .values_list("run_id", "top_client__client_id"):
        tokens[run_id].append(client)
    harmful = harmful_generation_ids(generation_ids=[g for _, g, _ in runs])
    return [EvidenceRecord(generation_id=str(gen), round_id=number, shares=shares[pk], harmful=gen in harmful,
                           token_top_clients=tuple(tokens[pk]))
            for pk, gen, number in runs if shares[pk]]


def harmful_generation_ids(*, generation_ids: list[int]) -> set[int]:
    marks = HarmMark.objects.filter(generation_id__in=generation_ids, revoked_at__isnull=True)
    return set(marks.values_list("generation_id", flat=True))


def fedavg_baseline(*, rounds: list[Round]) -> dict[str, float]:
    """Each client's FedAvg weight (its num_examples) summed over the rounds."""
    rows = (ClientUpdate.objects.filter(round__in=rounds).values("client__client_id")
            .annotate(n=Sum("num_examples")).order_by())
    return {r["client__client_id"]: float(r["n"]) for r in rows}


def period_rounds(*, federation: Federation, period: Period) -> list[Round]:
    """Rounds registered in the period: their client updates are screened."""
    return list(Round.objects.filter(federation=federation, registered_at__gte=period.start,
                                     registered_at__lt=period.end).order_by("number"))


def suspended_clients(*, federation: Federation) -> set[str]:
    return set(Client.objects.filter(federation=federation, status=Client.Status.SUSPENDED)
               .values_list("client_id", flat=True))


def active_harm_policies(*, federation: Federation) -> list[HarmPolicy]:
    return list(HarmPolicy.objects.filter(federation=federation, active=True).order_by("name"))


def settlement_list(*, federation: Federation) -> QuerySet[Settlement]:
    return Settlement.objects.filter(federation=federation).order_by("-period_start", "currency")


def settlement_get(*, federation: Federation, settlement_id: int) -> Settlement:
    settlement = Settlement.objects.filter(federation=federation, pk=settlement_id).first()
    if settlement is None:
        raise NotFound("unknown_settlement", f"no settlement {settlement_id} in federation {federation.slug!r}",
                       field="settlement_id")
    return settlement


def settlement_for_period(*, federation: Federation, period: Period, currency: str) -> Settlement:
    settlement = Settlement.objects.filter(federation=federation, period=period.label, currency=currency).first()
    if settlement is None:
        raise NotFound("unknown_settlement", f"federation {federation.slug!r} has no {currency} settlement for "
                       f"period {period.label}; settle it first", field="period")
    return settlement


def payout_export_get(*, federation: Federation, export_id: int) -> PayoutExport:
    export = PayoutExport.objects.filter(federation=federation, pk=export_id).select_related("settlement").first()
    if export is None:
        raise NotFound("unknown_export", f"no payout export {export_id} in federation {federation.slug!r}",
                       field="export_id")
    return export


def flag_list(*, federation: Federation, state: str | None = None, client_id: str | None = None) -> list[FlagView]:
    """The federation's ledger flags with their current state and review history."""
    with transaction.atomic(), ledger_session() as session, ledger_errors():
        return ledger.list_flags(session, federation.slug, state=state, client_id=client_id)


def ledger_balances(*, federation: Federation, client_id: str | None = None) -> list[ledger.Balance]:
    with transaction.atomic(), ledger_session() as session, ledger_errors():
        return ledger.balances(session, federation.slug, client_id=client_id)
