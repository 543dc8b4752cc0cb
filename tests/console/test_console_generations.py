"""The generation list: filters by status, client, round and dates; pagination; clear errors for bad filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from audits.models import Generation
from console_data import attributed_generation
from django.urls import reverse

pytestmark = pytest.mark.django_db

TOKENS = [("ok", [1.0, 0.0, 0.0])]


def _make(fed, n: int, *, leader: str = "alice", day: int = 1, round_number: int = 0) -> list[Generation]:
    others = [c for c in ("alice", "bob", "carol") if c != leader]
    shares = {leader: 0.7, others[0]: 0.2, others[1]: 0.1}
    created = datetime(2025, 3, day, 12, tzinfo=UTC)
    return [attributed_generation(fed, shares=shares, tokens=TOKENS, created_at=created, round_number=round_number)
            for _ in range(n)]


@pytest.fixture
def listing(as_user, users):
    client = as_user(users["auditor"])
    return lambda **params: client.get(reverse("console:generations", args=["fed-a"]), params)


def _ids(response) -> list[int]:
    return [g.pk for g in response.context["page"].object_list]


def test_it_filters_by_predicted_client_round_and_dates(listing, fed_a):
    alice = _make(fed_a, 3, leader="alice", day=1)
    bob_early = _make(fed_a, 2, leader="bob", day=2, round_number=1)
    bob_late = _make(fed_a, 1, leader="bob", day=5)
    assert sorted(_ids(listing(client="alice"))) == sorted(g.pk for g in alice)
    assert sorted(_ids(listing(client="bob", round=1))) == sorted(g.pk for g in bob_early)
    assert sorted(_ids(listing(start="2025-03-02", end="2025-03-04"))) == sorted(g.pk for g in bob_early)
    # The end date is inclusive: a generation at noon on the end day is in.
    assert sorted(_ids(listing(start="2025-03-05", end="2025-03-05"))) == [bob_late[0].pk]


def test_it_filters_by_status(listing, fed_a):
    done = _make(fed_a, 2)
    failed = _make(fed_a, 1)
    Generation.objects.filter(pk=failed[0].pk).update(status="failed", failure_code="engine_error")
    assert _ids(listing(status="failed")) == [failed[0].pk]
    assert sorted(_ids(listing(status="done"))) == sorted(g.pk for g in done)


def test_it_pages_25_at_a_time_newest_first_and_keeps_the_filters(listing, fed_a):
    made = _make(fed_a, 30, leader="carol")
    first, second = listing(client="carol"), listing(client="carol", page=2)
    assert len(_ids(first)) == 25 and len(_ids(second)) == 5
    assert set(_ids(first)) | set(_ids(second)) == {g.pk for g in made}
    assert _ids(first) == sorted(_ids(first), reverse=True)  # same timestamp: newest id first
    assert "client=carol&amp;page=2" in first.content.decode()
    assert "Page 1 of 2 · 30 generations" in first.content.decode()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2025-02-30"}, "Enter a date as YYYY-MM-DD."),
        ({"start": "2025-03-05", "end": "2025-03-01"}, "The end date 2025-03-01 is before the start date 2025-03-05."),
        ({"client": "mallory"}, "Federation &#x27;fed-a&#x27; has no client &#x27;mallory&#x27;."),
        ({"round": "7"}, "Federation &#x27;fed-a&#x27; has no round 7."),
        ({"round": "x"}, "Enter a whole number."),
        ({"status": "exploded"}, "Select a valid choice. exploded is not one of the available choices."),
    ],
)
def test_it_answers_bad_filters_with_400_and_a_message(listing, fed_a, params, message):
    _make(fed_a, 1)
    response = listing(**params)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert response.context["page"] is None  # no rows shown under a filter that did not apply


def test_it_answers_a_page_past_the_end_with_404(listing, fed_a):
    _make(fed_a, 2)
    response = listing(page=3)
    assert response.status_code == 404
    assert "there is no page 3; the list has 1 page(s)" in response.content.decode()
    assert listing(page="two").status_code == 400
