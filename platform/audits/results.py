"""Storing one engine result: the run, its per-client and per-token rows, and `done`, in one transaction.

The engine's `AttributionResult` is turned into plain Python first
(`ResultRows`), outside any transaction, so the locked section is only
inserts. The generation row is locked (`select_for_update`) and the
(generation, method version, config hash) run is looked up again inside the
lock: of two concurrent deliveries of the same task, the second finds the
first's run and only marks the generation done. The unique constraint on
that key backs this up at the database level.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from registry.errors import InvalidInput
from registry.models import Client

from .models import AttributionRun, ClientAttribution, Generation, TokenAttribution


@dataclass
class ResultRows:
    client_ids: list[str]
    response: str
    token_ids: list[int]
    token_texts: list[str]
    token_scores: list[list[float]]  # (T, K)
    token_shares: list[list[float]]  # (T, K)
    sequence_scores: list[float]  # (K,)
    sequence_shares: list[float]  # (K,)
    predicted_client: str
    responsible_set: list[str]
    provenance: dict


def result_rows(result) -> ResultRows:
    """Plain lists from an `attribution.AttributionResult` (its own `to_dict()`, tensors as floats)."""
    data = result.to_dict()
    provenance = data["provenance"]
    client_ids = [str(c) for c in data["client_ids"]]
    return ResultRows(
        client_ids=client_ids,
        response="".join(data["response_tokens"]),
        token_ids=[int(i) for i in data["response_ids"]],
        token_texts=[str(t) for t in data["response_tokens"]],
        token_scores=data["token_scores"],
        token_shares=data["token_shares"],
        sequence_scores=data["sequence_scores"],
        sequence_shares=data["sequence_shares"],
        predicted_client=str(data["predicted_client"]),
        responsible_set=[str(c) for c in data["responsible_set"]],
        provenance={**provenance, "mode": data["mode"], "timings": data.get("timings", {})},
    )


def snapshot_hashes(provenance: dict, client_ids: list[str]) -> dict:
    return {
        "global": provenance.get("global_sha256"),
        "clients": dict(zip(client_ids, provenance.get("client_sha256") or [], strict=False)),
    }


def lineage_document(lineage) -> dict | None:
    """What a run keeps of an `attribution.lineage.LineageResult`: all of it but the per-round result."""
    if lineage is None:
        return None
    return {k: v for k, v in lineage.to_dict().items() if k != "attributed"}


def store_result(*, generation_id: int, result, settings_, engine_ms: int, lineage=None) -> AttributionRun:
    rows = result_rows(result)
    document = lineage_document(lineage)
    with transaction.atomic():
        generation = Generation.objects.select_for_update().get(pk=generation_id)
        # The engine's own provenance is the truth; it equals settings_ unless the engine changed under us.
        key = {
            "method_version": rows.provenance.get("method_version", settings_.method_version),
            "config_hash": rows.provenance.get("config_hash", settings_.config_hash),
        }
        run = generation.runs.filter(**key).first()
        if run is None:
            run = _insert_run(generation, rows, key, settings_, document)
        _mark_done(generation, rows, engine_ms)
    return run


def _insert_run(generation: Generation, rows: ResultRows, key: dict, settings_, lineage: dict | None) -> AttributionRun:
    clients = _round_clients(generation, rows.client_ids)
    provenance = rows.provenance
    run = AttributionRun.objects.create(
        generation=generation,
        federation_id=generation.federation_id,
        round_id=generation.round_id,
        config=provenance.get("config") or settings_.config.to_dict(),
        tracked_modules=provenance.get("tracked_modules", []),
        snapshot_hashes=snapshot_hashes(provenance, rows.client_ids),
        provenance=provenance,
        client_ids=rows.client_ids,
        predicted_client=clients[rows.predicted_client],
        num_tokens=len(rows.token_ids),
        lineage=lineage,
        **key,
    )
    ClientAttribution.objects.bulk_create(_client_rows(run, generation, rows, clients))
    TokenAttribution.objects.bulk_create(_token_rows(run, rows, clients))
    return run


def _round_clients(generation: Generation, client_ids: list[str]) -> dict[str, Client]:
    clients = {
        c.client_id: c
        for c in Client.objects.filter(updates__round_id=generation.round_id, client_id__in=client_ids)
    }
    missing = [c for c in client_ids if c not in clients]
    if missing:
        raise InvalidInput(
            "unknown_client", f"the engine named client(s) that are not in the round: {', '.join(missing)}"
        )
    return clients


def _client_rows(run, generation, rows: ResultRows, clients):
    order = sorted(range(len(rows.client_ids)), key=lambda k: -rows.sequence_scores[k])
    rank = {k: r + 1 for r, k in enumerate(order)}
    responsible = set(rows.responsible_set)
    for k, cid in enumerate(rows.client_ids):
        yield ClientAttribution(
            run=run,
            generation=generation,
            federation_id=generation.federation_id,
            round_id=generation.round_id,
            client=clients[cid],
            raw_score=float(rows.sequence_scores[k]),
            share=float(rows.sequence_shares[k]),
            rank=rank[k],
            in_responsible_set=cid in responsible,
            created_at=generation.created_at,
        )


def _token_rows(run, rows: ResultRows, clients):
    for t, token_id in enumerate(rows.token_ids):
        shares = rows.token_shares[t]
        top = max(range(len(shares)), key=shares.__getitem__)
        yield TokenAttribution(
            run=run,
            position=t,
            token_id=token_id,
            text=rows.token_texts[t],
            top_client=clients[rows.client_ids[top]],
            top_share=float(shares[top]),
            scores=[float(s) for s in rows.token_scores[t]],
        )


def _mark_done(generation: Generation, rows: ResultRows, engine_ms: int) -> None:
    fields = ["status", "finished_at", "engine_ms", "failure_code", "failure_reason"]
    if generation.source == Generation.Source.GENERATED:
        generation.response = rows.response
        fields.append("response")
    generation.status = Generation.Status.DONE
    generation.finished_at = timezone.now()
    generation.engine_ms = engine_ms
    generation.failure_code = generation.failure_reason = ""
    generation.save(update_fields=fields)
