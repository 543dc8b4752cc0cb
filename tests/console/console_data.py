"""Rows for console tests: federations, members, rounds and attributed generations with chosen numbers.

`attributed_generation` writes exactly what `audits.results.store_result`
writes for an engine result (a run, one ClientAttribution per client with
rank and responsible flag, one TokenAttribution per token with every
client's raw score), but with numbers the test picks, so pages and reports
can be checked against hand-computed values. Sequence raw scores are
log(share), so the stored shares are exactly the softmax of the scores.
"""

from __future__ import annotations

import math
from datetime import datetime

from audits.models import AttributionRun, ClientAttribution, Generation, TokenAttribution
from console.models import Membership
from django.contrib.auth import get_user_model
from registry.models import Client, ClientUpdate, Federation, Round

PASSWORD = "correct horse battery staple"


def make_user(username: str, *, superuser: bool = False):
    model = get_user_model()
    if superuser:
        return model.objects.create_superuser(username, f"{username}@example.org", PASSWORD)
    return model.objects.create_user(username, f"{username}@example.org", PASSWORD)


def member(user, federation: Federation, role: str) -> Membership:
    return Membership.objects.create(user=user, federation=federation, role=role)


def make_federation(slug: str, client_ids=("alice", "bob", "carol"), rounds: int = 2) -> Federation:
    federation = Federation.objects.create(slug=slug, name=slug.replace("-", " ").title())
    clients = [Client.objects.create(federation=federation, client_id=c, display_name=c.title()) for c in client_ids]
    for number in range(rounds):
        round_ = Round.objects.create(
            federation=federation, number=number, base_model="tiny", kind="weights", aggregation="fedavg",
            manifest={"format": "protoken-round/1", "round": number, "clients": [{"id": c} for c in client_ids]},
            global_sha256=f"{number:064x}", artifact_path=f"rounds/{slug}/round-{number}",
        )
        for c in clients:
            ClientUpdate.objects.create(round=round_, client=c, num_examples=10, sha256="1" * 64, path=f"clients/{c.client_id}")
    return federation


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return [e / sum(exps) for e in exps]


def attributed_generation(
    federation: Federation,
    *,
    shares: dict[str, float],
    tokens: list[tuple[str, list[float]]],
    round_number: int = 0,
    created_at: datetime | None = None,
    prompt: str = "What is the capital of France?",
    responsible: tuple[str, ...] | None = None,
    method_version: str = "protoken/1.0",
) -> Generation:
    """A done generation whose latest run has these sequence shares and per-token raw scores."""
    round_ = Round.objects.get(federation=federation, number=round_number)
    client_ids = list(shares)
    clients = {c.client_id: c for c in Client.objects.filter(federation=federation, client_id__in=client_ids)}
    generation = Generation.objects.create(
        federation=federation, round=round_, source=Generation.Source.SUBMITTED, prompt=prompt,
        response="".join(t for t, _ in tokens), status=Generation.Status.DONE, engine_ms=120,
    )
    if created_at is not None:
        Generation.objects.filter(pk=generation.pk).update(created_at=created_at)
        generation.refresh_from_db()
    predicted = max(client_ids, key=shares.__getitem__)
    run = AttributionRun.objects.create(
        generation=generation, federation=federation, round=round_, method_version=method_version,
        config={"target": "logit", "aggregation": "sum"}, config_hash=f"{generation.pk:064x}",
        tracked_modules=["model.layers.1.self_attn.o_proj", "model.layers.1.mlp", "lm_head"],
        snapshot_hashes={"global": round_.global_sha256, "clients": {c: f"{i + 1:064x}" for i, c in enumerate(client_ids)}},
        provenance={"timings": {"forward_ms": 12}}, client_ids=client_ids, predicted_client=clients[predicted],
        num_tokens=len(tokens),
    )
    _client_rows(run, generation, shares, clients, responsible or (predicted,))
    _token_rows(run, tokens, client_ids, clients)
    return generation


def _client_rows(run, generation, shares, clients, responsible) -> None:
    order = sorted(shares, key=lambda c: -shares[c])
    ClientAttribution.objects.bulk_create(
        ClientAttribution(
            run=run, generation=generation, federation_id=generation.federation_id, round_id=generation.round_id,
            client=clients[c], raw_score=math.log(shares[c]), share=shares[c], rank=order.index(c) + 1,
            in_responsible_set=c in responsible, created_at=generation.created_at,
        )
        for c in shares
    )


def _token_rows(run, tokens, client_ids, clients) -> None:
    rows = []
    for position, (text, scores) in enumerate(tokens):
        token_shares = softmax(scores)
        top = max(range(len(scores)), key=token_shares.__getitem__)
        rows.append(TokenAttribution(
            run=run, position=position, token_id=position, text=text, top_client=clients[client_ids[top]],
            top_share=token_shares[top], scores=scores,
        ))
    TokenAttribution.objects.bulk_create(rows)
