"""Overview, federation and client pages: the numbers they show, and their period forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from console_data import attributed_generation
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from ledger import Finding, record_findings, session_on_connection

pytestmark = pytest.mark.django_db

TOKENS = [(" yes", [2.0, 0.0, 0.0]), (" no", [0.0, 0.0, 2.0])]


def _gen(fed, alice: float, bob: float, carol: float, when: datetime):
    return attributed_generation(fed, shares={"alice": alice, "bob": bob, "carol": carol}, tokens=TOKENS, created_at=when)


def test_the_overview_ranks_clients_by_mean_share_over_7_days(as_user, users, fed_a):
    now = timezone.now()
    _gen(fed_a, 0.6, 0.3, 0.1, now - timedelta(days=1))
    _gen(fed_a, 0.2, 0.7, 0.1, now - timedelta(days=2))
    _gen(fed_a, 0.05, 0.05, 0.9, now - timedelta(days=30))  # outside the 7 days
    response = as_user(users["operator"]).get(reverse("console:overview"))
    card = response.context["cards"][0]
    assert (card["clients"], card["rounds"], card["generations_7d"]) == (3, 2, 2)
    assert [(r["client_id"], round(r["mean_share"], 6)) for r in card["leaderboard"]] == [
        ("bob", 0.5), ("alice", 0.4), ("carol", 0.1),
    ]


def test_the_federation_page_shows_client_shares_over_the_chosen_period(as_user, users, fed_a):
    _gen(fed_a, 0.6, 0.3, 0.1, datetime(2025, 1, 10, 8, tzinfo=UTC))
    _gen(fed_a, 0.2, 0.2, 0.6, datetime(2025, 1, 20, 8, tzinfo=UTC))
    client = as_user(users["operator"])
    response = client.get(reverse("console:federation", args=["fed-a"]), {"start": "2025-01-01", "end": "2025-01-15"})
    rows = {r["client"].client_id: r for r in response.context["clients"]}
    assert (rows["alice"]["generations"], rows["alice"]["mean_share"], rows["alice"]["top1"]) == (1, 0.6, 1)
    response = client.get(reverse("console:federation", args=["fed-a"]), {"start": "2025-01-01", "end": "2025-01-31"})
    rows = {r["client"].client_id: r for r in response.context["clients"]}
    assert rows["carol"]["mean_share"] == pytest.approx(0.35) and rows["carol"]["top1"] == 1
    html = response.content.decode()
    assert "Round" in html and "0000000000000000" not in html.split("Rounds")[0]


def test_the_federation_page_refuses_an_inverted_period(as_user, users, fed_a):
    response = as_user(users["operator"]).get(reverse("console:federation", args=["fed-a"]),
                                              {"start": "2025-02-01", "end": "2025-01-01"})
    assert response.status_code == 400
    assert "the end date 2025-01-01 is before the start date 2025-02-01" in response.content.decode()
    assert response.context["clients"] == []


def test_the_client_page_shows_daily_shares_top_tokens_and_flags(as_user, users, fed_a):
    _gen(fed_a, 0.6, 0.3, 0.1, datetime(2025, 1, 10, 8, tzinfo=UTC))
    _gen(fed_a, 0.8, 0.1, 0.1, datetime(2025, 1, 10, 9, tzinfo=UTC))
    _gen(fed_a, 0.4, 0.3, 0.3, datetime(2025, 1, 12, 9, tzinfo=UTC))
    connection.ensure_connection()
    session = session_on_connection(connection.connection)
    record_findings(session, federation="fed-a", period="2025-01",
                    findings=[Finding(client_id="alice", method="share_outlier", score=3.5, p_value=0.002, q_value=0.01, evidence={})])
    session.flush()
    response = as_user(users["auditor"]).get(reverse("console:client", args=["fed-a", "alice"]),
                                             {"start": "2025-01-01", "end": "2025-01-31"})
    daily = [(str(d["day"]), d["generations"], round(d["mean_share"], 6)) for d in response.context["daily"]]
    assert daily == [("2025-01-10", 2, 0.7), ("2025-01-12", 1, 0.4)]
    assert response.context["summary"]["top1"] == 3
    assert [t.text for t in response.context["top_tokens"]] == [" yes"] * 3  # " no" is carol's
    html = response.content.decode()
    assert "<svg" in html and "share_outlier" in html and "flag-open" in html


def test_the_client_page_answers_404_for_an_unknown_client(as_user, users, fed_a):
    response = as_user(users["auditor"]).get(reverse("console:client", args=["fed-a", "mallory"]))
    assert response.status_code == 404
    assert "has no client &#x27;mallory&#x27;" in response.content.decode()
