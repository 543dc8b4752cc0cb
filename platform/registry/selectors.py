"""Reads from the registry. Every selector takes the federation it is scoped to."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from .errors import NotFound
from .models import ApiToken, Client, Federation, Round


def federation_get(*, slug: str) -> Federation:
    federation = Federation.objects.filter(slug=slug).first()
    if federation is None:
        raise NotFound("unknown_federation", f"no federation {slug!r}", field="federation")
    return federation


def client_list(*, federation: Federation) -> QuerySet[Client]:
    return Client.objects.filter(federation=federation).order_by("client_id")


def client_get(*, federation: Federation, client_id: str) -> Client:
    client = Client.objects.filter(federation=federation, client_id=client_id).first()
    if client is None:
        raise NotFound("unknown_client", f"no client {client_id!r} in federation {federation.slug!r}", field="client_id")
    return client


def round_list(*, federation: Federation) -> QuerySet[Round]:
    return Round.objects.filter(federation=federation).annotate(num_clients=Count("updates")).order_by("number")


def round_get(*, federation: Federation, number: int) -> Round:
    round_ = Round.objects.filter(federation=federation, number=number).first()
    if round_ is None:
        raise NotFound("unknown_round", f"no round {number} in federation {federation.slug!r}", field="round")
    return round_


def round_latest(*, federation: Federation) -> Round:
    round_ = Round.objects.filter(federation=federation).order_by("-number").first()
    if round_ is None:
        raise NotFound("no_rounds", f"federation {federation.slug!r} has no registered rounds yet", field="round")
    return round_


def round_client_ids(*, round_: Round) -> list[str]:
    """The round's clients in manifest order (the engine's client axis)."""
    return [c["id"] for c in round_.manifest["clients"]]


def token_list(*, federation: Federation) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(federation=federation).order_by("created_at")
