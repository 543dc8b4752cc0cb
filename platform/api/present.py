"""Model rows to response dicts. Kept apart from the routes so views stay a few lines each."""

from __future__ import annotations

from audits.models import Generation
from audits.selectors import generation_latest_run, run_client_rows, run_token_rows
from registry.models import Round


def round_out(round_: Round) -> dict:
    updates = round_.updates.select_related("client").order_by("client__client_id")
    return {
        "federation": round_.federation.slug,
        "number": round_.number,
        "base_model": round_.base_model,
        "kind": round_.kind,
        "aggregation": round_.aggregation,
        "global_sha256": round_.global_sha256,
        "artifact_path": round_.artifact_path,
        "size_bytes": round_.size_bytes,
        "registered_at": round_.registered_at,
        "clients": [
            {"client_id": u.client.client_id, "num_examples": u.num_examples, "sha256": u.sha256} for u in updates
        ],
    }


def generation_out(generation: Generation, *, with_attribution: bool) -> dict:
    out = {
        "id": generation.pk,
        "federation": generation.federation.slug,
        "round": generation.round.number,
        **{
            name: getattr(generation, name)
            for name in (
                "source", "status", "prompt", "response", "failure_code", "failure_reason", "attempts",
                "external_ref", "created_at", "started_at", "finished_at", "engine_ms", "lineage",
                "lineage_credit",
            )
        },
        "attribution": None,
    }
    if with_attribution:
        out["attribution"] = attribution_out(generation)
    return out


def attribution_out(generation: Generation) -> dict | None:
    run = generation_latest_run(generation=generation)
    if run is None:
        return None
    clients = list(run_client_rows(run=run))
    return {
        "method_version": run.method_version,
        "config": run.config,
        "config_hash": run.config_hash,
        "tracked_modules": run.tracked_modules,
        "snapshot_hashes": run.snapshot_hashes,
        "client_ids": run.client_ids,
        "predicted_client": run.predicted_client.client_id,
        "responsible_set": [c.client.client_id for c in clients if c.in_responsible_set],
        "clients": [
            {
                "client_id": c.client.client_id,
                "raw_score": c.raw_score,
                "share": c.share,
                "rank": c.rank,
                "in_responsible_set": c.in_responsible_set,
            }
            for c in clients
        ],
        "tokens": [
            {
                "position": t.position,
                "token_id": t.token_id,
                "text": t.text,
                "top_client": t.top_client.client_id,
                "top_share": t.top_share,
                "scores": t.scores,
            }
            for t in run_token_rows(run=run)
        ],
        "lineage": run.lineage,
    }


def accepted_out(generation: Generation) -> dict:
    return {
        "id": generation.pk,
        "status": generation.status,
        "source": generation.source,
        "round": generation.round.number,
        "batch_id": str(generation.batch_id) if generation.batch_id else None,
    }
