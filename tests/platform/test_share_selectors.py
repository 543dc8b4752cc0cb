"""Selectors over stored attributions: a client's share over a period, federation summary, top-1 tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from audits.selectors import client_share_summary, client_top_tokens, federation_share_summary
from django.utils import timezone
from platform_factories import (
    AttributionRunFactory,
    ClientAttributionFactory,
    ClientFactory,
    TokenAttributionFactory,
)

pytestmark = pytest.mark.django_db


def test_it_summarises_a_clients_share_over_a_period(federation):
    alice = federation.clients.get(client_id="alice")
    now = timezone.now()
    for days, share, rank in [(1, 0.6, 1), (2, 0.2, 2), (40, 0.9, 1)]:
        ClientAttributionFactory(
            client=alice, federation=federation, share=share, rank=rank, in_responsible_set=rank == 1,
            created_at=now - timedelta(days=days),
            run=AttributionRunFactory(generation__round__federation=federation),
        )
    summary = client_share_summary(client=alice, since=now - timedelta(days=30))
    assert summary["generations"] == 2
    assert summary["mean_share"] == pytest.approx(0.4)
    assert (summary["top1"], summary["responsible"]) == (1, 1)
    assert client_share_summary(client=alice)["generations"] == 3


def test_it_summarises_every_client_of_a_federation(federation):
    run = AttributionRunFactory(generation__round__federation=federation)
    for cid, share in [("alice", 0.7), ("bob", 0.2), ("carol", 0.1)]:
        ClientAttributionFactory(run=run, client=federation.clients.get(client_id=cid), share=share,
                                 rank=1 if cid == "alice" else 2)
    rows = federation_share_summary(federation=federation)
    assert [r["client_id"] for r in rows] == ["alice", "bob", "carol"]
    assert sum(r["mean_share"] for r in rows) == pytest.approx(1.0)
    assert [r["top1"] for r in rows] == [1, 0, 0]


def test_it_lists_tokens_where_a_client_is_top1(federation):
    alice, bob = (federation.clients.get(client_id=c) for c in ("alice", "bob"))
    run = AttributionRunFactory(generation__round__federation=federation, predicted_client=alice)
    TokenAttributionFactory(run=run, position=0, top_client=alice)
    TokenAttributionFactory(run=run, position=1, top_client=bob)
    TokenAttributionFactory(run=run, position=2, top_client=alice)
    assert [t.position for t in client_top_tokens(client=alice)] == [0, 2]
    assert list(client_top_tokens(client=ClientFactory(federation=federation))) == []
