"""Fixtures for the rewards tests: a federation with clients, attributed generations, real round folders.

Every test gets a fresh federation slug: ledger rows are never deleted (the
ledger refuses it), so tests that commit must not see each other's rows.
Generations are written as the attribution worker stores them (run, client
rows, token rows), with `created_at` moved into the test's period.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch

CLIENTS = ("alice", "bob", "carol", "dave")
START = datetime(2026, 1, 5, tzinfo=UTC)
END = START + timedelta(days=1)


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                      "OPTIONS": {"location": str(tmp_path / "artifacts")}},
    }
    settings.ARTIFACT_CACHE_DIR = tmp_path / "artifact-cache"


def make_federation(clients=CLIENTS):
    from registry.models import Client, Federation

    fed = Federation.objects.create(slug=f"rw-{uuid.uuid4().hex[:10]}", name="Rewards test")
    for cid in clients:
        Client.objects.create(federation=fed, client_id=cid, payout_account_ref=f"IBAN-{cid}")
    return fed


@pytest.fixture
def fed(db):
    return make_federation()


@pytest.fixture
def round0(fed):
    return make_round_row(fed, 0)


def make_round_row(fed, number: int):
    """A Round row without files (its registration time is now, outside the tests' past period)."""
    from registry.models import Round

    return Round.objects.create(federation=fed, number=number, base_model="tiny", kind="weights",
                                aggregation="fedavg", manifest={"clients": []}, global_sha256="0" * 64,
                                artifact_path=f"rounds/{fed.slug}/none")


def add_generation(fed, round_, shares: dict[str, float], *, tokens=(), response: str = "a fine answer",
                   at: datetime = START + timedelta(hours=1)):
    """A generation with one attribution run: `shares` per client and `tokens` (top client per position)."""
    from audits.models import AttributionRun, ClientAttribution, Generation, TokenAttribution
    from registry.models import Client

    clients = {c.client_id: c for c in Client.objects.filter(federation=fed)}
    gen = Generation.objects.create(federation=fed, round=round_, source="submitted", prompt="q",
                                    response=response, status="done")
    Generation.objects.filter(pk=gen.pk).update(created_at=at)
    ranked = sorted(shares, key=lambda c: (-shares[c], c))
    run = AttributionRun.objects.create(
        generation=gen, federation=fed, round=round_, method_version="protoken/test", config={},
        config_hash=uuid.uuid4().hex, tracked_modules=[], snapshot_hashes={}, client_ids=list(shares),
        predicted_client=clients[ranked[0]], num_tokens=len(tokens))
    ClientAttribution.objects.bulk_create([
        ClientAttribution(run=run, generation=gen, federation=fed, round=round_, client=clients[c], raw_score=1.0,
                          share=shares[c], rank=ranked.index(c) + 1, in_responsible_set=c == ranked[0], created_at=at)
        for c in shares])
    TokenAttribution.objects.bulk_create([
        TokenAttribution(run=run, position=i, token_id=7, text="t", top_client=clients[c], top_share=0.8,
                         scores=[1.0] * len(shares))
        for i, c in enumerate(tokens)])
    return gen


def ledger_balances(fed) -> dict[tuple[str, str], int]:
    """{(kind, client): balance} of the federation's EUR accounts, read on Django's connection."""
    from rewards.selectors import ledger_balances as read

    return {(b.kind, b.client_id): b.balance for b in read(federation=fed) if b.currency == "EUR"}


def settle(fed, *, pool: int = 1000, currency: str = "EUR", start=START, end=END, basis="sequence_share",
           rules=None, actor: str = "tester"):
    from rewards.services import period_settle

    return period_settle(federation=fed, period_start=start, period_end=end, pool_amount=pool, currency=currency,
                         basis=basis, rules=rules, actor=actor)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from attribution.tiny import save_tiny_model

    return save_tiny_model("llama", tmp_path_factory.mktemp("rewards-models") / "tiny-llama", seed=0)


def write_backdoor_round(out: Path, *, base: Path, federation: str, number: int, clients, malicious,
                         seed: int = 0) -> Path:
    """A real round folder: benign clients add small noise to the tracked slice, malicious ones a large shift."""
    from safetensors.torch import load_file

    from attribution.snapshot import slice_state_dict, tracked_module_names, write_round
    from attribution.snapshot_types import ClientUpdate

    base_slice = slice_state_dict(load_file(base / "model.safetensors"), tracked_module_names(base))
    gen = torch.Generator().manual_seed(seed)
    shift = {k: torch.randn(v.shape, generator=gen) for k, v in base_slice.items()}
    updates = []
    for cid in clients:
        bias = 0.5 if cid in malicious else 0.0
        tensors = {k: v + 0.02 * torch.randn(v.shape, generator=gen) + bias * shift[k] for k, v in base_slice.items()}
        updates.append(ClientUpdate(cid, num_examples=10, tensors=tensors))
    glob = {k: sum(u.tensors[k] for u in updates) / len(updates) for k in base_slice}
    return write_round(out, federation=federation, round=number, base_model=str(base), kind="weights",
                       global_update=glob, clients=updates)
