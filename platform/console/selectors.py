"""Reads for the console pages and the audit reports, on top of the registry's and audits' selectors.

Everything here takes a federation (already access-checked by the caller)
and, where it is about time, a `Period`. Aggregates run in Postgres
(group by day / client / token text); only per-token share vectors of one
generation are computed in Python, as the softmax of the stored raw scores
(the engine's own definition of a token's client shares).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from audits.models import AttributionRun, ClientAttribution, Generation, TokenAttribution
from audits.selectors import federation_share_summary, generation_status_counts
from django.db.models import Avg, Count, F, Q, Window
from django.db.models.functions import RowNumber, TruncDate
from registry.models import Client, Federation, Round

from .periods import Period

# Tableau 10: distinguishable, and readable as a light tint behind dark text.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip


def client_colours(*, federation: Federation) -> dict[str, str]:
    """A stable colour per client (by client id order), the same on every page and in reports."""
    ids = Client.objects.filter(federation=federation).order_by("client_id").values_list("client_id", flat=True)
    return {cid: PALETTE[i % len(PALETTE)] for i, cid in enumerate(ids)}


def federation_card(*, federation: Federation, now: datetime, leaders: int = 5) -> dict:
    """The overview's numbers for one federation: the last 7 days and its share leaderboard."""
    since = now - timedelta(days=7)
    recent = Generation.objects.filter(federation=federation, created_at__gte=since)
    shares = federation_share_summary(federation=federation, since=since)
    return {
        "federation": federation,
        "clients": federation.clients.count(),
        "rounds": federation.rounds.count(),
        "generations_7d": recent.count(),
        "failed_7d": recent.filter(status=Generation.Status.FAILED).count(),
        "leaderboard": sorted(shares, key=lambda r: (-r["mean_share"], r["client_id"]))[:leaders],
    }


def client_period_rows(*, federation: Federation, period: Period) -> list[dict]:
    """Every client of the federation with its numbers over the period (zeros when it had none)."""
    summary = {
        r["client_id"]: r for r in federation_share_summary(federation=federation, since=period.since, until=period.until)
    }
    empty = {"generations": 0, "mean_share": 0.0, "top1": 0, "responsible": 0}
    return [
        {"client": c, **{k: v for k, v in summary.get(c.client_id, empty).items() if k != "client_id"}}
        for c in Client.objects.filter(federation=federation).order_by("client_id")
    ]


def round_rows(*, federation: Federation):
    return (
        Round.objects.filter(federation=federation)
        .annotate(num_clients=Count("updates", distinct=True), num_generations=Count("generations", distinct=True))
        .order_by("-number")
    )


def generation_runs(*, generation: Generation) -> list[AttributionRun]:
    return list(
        AttributionRun.objects.filter(generation=generation).select_related("predicted_client", "round").order_by("-created_at", "-id")
    )


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def generation_tokens(*, run: AttributionRun) -> list[dict]:
    """The response token by token: text, top client and share, and every client's share of it."""
    rows = run.token_rows.select_related("top_client").order_by("position")
    return [
        {
            "position": t.position,
            "text": t.text,
            "top_client": t.top_client.client_id,
            "top_share": t.top_share,
            "shares": softmax(t.scores),
        }
        for t in rows
    ]


def run_client_rows(*, run: AttributionRun) -> list[ClientAttribution]:
    return list(run.client_rows.select_related("client").order_by("rank"))


def client_daily_shares(*, client: Client, period: Period) -> list[dict]:
    """The client's mean share per day of the period (days without generations are absent)."""
    rows = (
        ClientAttribution.objects.filter(client=client, created_at__gte=period.since, created_at__lt=period.until)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(generations=Count("id"), mean_share=Avg("share"), top1=Count("id", filter=Q(rank=1)))
        .order_by("day")
    )
    return list(rows)


def federation_daily_shares(*, federation: Federation, period: Period) -> list[dict]:
    """(client_id, day, mean share) over the period, for the share-over-time chart."""
    return list(
        ClientAttribution.objects.filter(federation=federation, created_at__gte=period.since, created_at__lt=period.until)
        .annotate(day=TruncDate("created_at"))
        .values("client__client_id", "day")
        .annotate(mean_share=Avg("share"))
        .order_by("client__client_id", "day")
    )


def generations_per_day(*, federation: Federation, period: Period) -> list[dict]:
    """Every day of the period with its generation counts by status (zeros included)."""
    rows = (
        Generation.objects.filter(federation=federation, created_at__gte=period.since, created_at__lt=period.until)
        .annotate(day=TruncDate("created_at"))
        .values("day", "status")
        .annotate(n=Count("id"))
    )
    by_day = {day: dict.fromkeys(Generation.Status.values, 0) for day in period.days()}
    for r in rows:
        by_day[r["day"]][r["status"]] = r["n"]
    return [{"day": day, **counts, "total": sum(counts.values())} for day, counts in by_day.items()]


def top_tokens_per_client(*, federation: Federation, period: Period | None = None, per_client: int = 8) -> dict:
    """Per client, the token texts it is most often top-1 for: {client_id: [{text, count, mean_share}]}."""
    qs = TokenAttribution.objects.filter(run__federation=federation)
    if period is not None:
        qs = qs.filter(run__generation__created_at__gte=period.since, run__generation__created_at__lt=period.until)
    grouped = (
        qs.values("top_client__client_id", "text")
        .annotate(count=Count("id"), mean_share=Avg("top_share"))
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("top_client__client_id")],
                order_by=[F("count").desc(), F("mean_share").desc(), F("text").asc()],
            )
        )
        .filter(rank__lte=per_client)
        .order_by("top_client__client_id", "rank")
    )
    out: dict[str, list[dict]] = {}
    for r in grouped:
        out.setdefault(r["top_client__client_id"], []).append(
            {"text": r["text"], "count": r["count"], "mean_share": r["mean_share"]}
        )
    return out


def client_top_token_rows(*, client: Client, limit: int = 50):
    """The most recent tokens where the client is top-1, with the generation they belong to."""
    return (
        TokenAttribution.objects.filter(top_client=client)
        .select_related("run")
        .order_by("-run__generation__created_at", "-run_id", "position")[:limit]
    )


def period_totals(*, federation: Federation, period: Period) -> dict:
    """The headline numbers of a period."""
    generations = Generation.objects.filter(federation=federation, created_at__gte=period.since, created_at__lt=period.until)
    runs = AttributionRun.objects.filter(generation__in=generations)
    engine = generations.filter(engine_ms__isnull=False).aggregate(mean=Avg("engine_ms"))
    return {
        "generations": generations.count(),
        "by_status": {k: v for k, v in _status_counts(generations).items() if v},
        "attributed": generations.filter(status=Generation.Status.DONE).count(),
        "tokens": sum(runs.values_list("num_tokens", flat=True)),
        "rounds": sorted(set(generations.values_list("round__number", flat=True))),
        "method_versions": sorted(set(runs.values_list("method_version", flat=True))),
        "mean_engine_ms": round(engine["mean"]) if engine["mean"] is not None else None,
    }


def _status_counts(generations) -> dict[str, int]:
    counts = dict.fromkeys(Generation.Status.values, 0)
    for r in generations.values("status").annotate(n=Count("id")):
        counts[r["status"]] = r["n"]
    return counts


def status_counts(*, federation: Federation) -> dict[str, int]:
    return generation_status_counts(federation=federation)
