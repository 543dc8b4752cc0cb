"""Reads over generations and attributions. Every selector is scoped to federations the caller may see."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Avg, Count, Q, QuerySet
from registry.errors import NotFound
from registry.models import Client, Federation

from .models import AttributionRun, ClientAttribution, Generation, TokenAttribution


def generation_get(*, federation_ids: Iterable[int], generation_id: int) -> Generation:
    generation = (
        Generation.objects.select_related("round", "federation")
        .filter(pk=generation_id, federation_id__in=list(federation_ids))
        .first()
    )
    if generation is None:
        raise NotFound("unknown_generation", f"no generation {generation_id}", field="generation_id")
    return generation


def generation_list(
    *,
    federation_ids: Iterable[int],
    status: str | None = None,
    source: str | None = None,
    round_number: int | None = None,
    predicted_client: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Generation]:
    qs = Generation.objects.filter(federation_id__in=list(federation_ids)).select_related("round", "federation")
    filters = {
        "status": status,
        "source": source,
        "round__number": round_number,
        "created_at__gte": since,
        "created_at__lt": until,
        "runs__predicted_client__client_id": predicted_client,
    }
    qs = qs.filter(**{k: v for k, v in filters.items() if v is not None})
    return qs.order_by("-created_at", "-id")


def generation_latest_run(*, generation: Generation) -> AttributionRun | None:
    return (
        AttributionRun.objects.filter(generation=generation)
        .select_related("predicted_client")
        .order_by("-created_at", "-id")
        .first()
    )


def run_client_rows(*, run: AttributionRun) -> QuerySet[ClientAttribution]:
    return run.client_rows.select_related("client").order_by("rank")


def run_token_rows(*, run: AttributionRun) -> QuerySet[TokenAttribution]:
    return run.token_rows.select_related("top_client").order_by("position")


def client_share_summary(*, client: Client, since: datetime | None = None, until: datetime | None = None) -> dict:
    """Client X over a period: attributed generations, mean share, top-1 and responsible counts."""
    qs = ClientAttribution.objects.filter(client=client)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    agg = qs.aggregate(
        generations=Count("id"),
        mean_share=Avg("share"),
        top1=Count("id", filter=Q(rank=1)),
        responsible=Count("id", filter=Q(in_responsible_set=True)),
    )
    agg["mean_share"] = float(agg["mean_share"] or 0.0)
    return {"client_id": client.client_id, **agg}


def federation_share_summary(
    *, federation: Federation, since: datetime | None = None, until: datetime | None = None
) -> list[dict]:
    """Every client of the federation over a period, as `client_share_summary` rows."""
    qs = ClientAttribution.objects.filter(federation=federation)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    rows = (
        qs.values("client__client_id")
        .annotate(
            generations=Count("id"),
            mean_share=Avg("share"),
            top1=Count("id", filter=Q(rank=1)),
            responsible=Count("id", filter=Q(in_responsible_set=True)),
        )
        .order_by("client__client_id")
    )
    return [{"client_id": r.pop("client__client_id"), **r} for r in rows]


def client_top_tokens(*, client: Client, limit: int = 100) -> QuerySet[TokenAttribution]:
    """Tokens where the client is top-1, most recent runs first."""
    return TokenAttribution.objects.filter(top_client=client).select_related("run").order_by("-run_id", "position")[
        :limit
    ]


def generation_status_counts(*, federation: Federation) -> dict[str, int]:
    rows = Generation.objects.filter(federation=federation).values("status").annotate(n=Count("id"))
    return {r["status"]: r["n"] for r in rows}
