"""Allocation maths without a database: exact sums, caps, minimums, exclusions, deterministic rounding."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.allocation import AllocationRules, aggregate, allocate, contribution_digest, largest_remainder
from ledger.errors import InvalidInput

clients = st.text("abcdefgh", min_size=1, max_size=3)
weights = st.one_of(st.integers(0, 1000), st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
                    st.fractions(0, 1000))
contributions = st.dictionaries(clients, weights, min_size=0, max_size=12)
pools = st.integers(0, 10**12)


@settings(max_examples=300, deadline=None)
@given(contributions, pools)
def test_it_allocates_the_whole_pool_when_nothing_restricts(contrib, pool):
    result = allocate(contrib, pool)
    assert sum(result.amounts.values()) + result.retained == pool
    if any(Fraction(w) > 0 for w in contrib.values()):
        assert result.retained == 0
    assert all(a > 0 for a in result.amounts.values())


@settings(max_examples=300, deadline=None)
@given(contributions, pools)
def test_it_rounds_each_amount_to_within_one_unit_of_its_exact_quota(contrib, pool):
    result = allocate(contrib, pool)
    total = sum(Fraction(w) for w in contrib.values())
    for client, weight in contrib.items():
        if total:
            quota = pool * Fraction(weight) / total
            assert abs(result.amounts.get(client, 0) - quota) < 1


@settings(max_examples=300, deadline=None)
@given(contributions, pools, st.integers(0, 10**6), st.one_of(st.none(), st.integers(1, 10**9)),
       st.sets(clients, max_size=3), st.sets(clients, max_size=3), st.sampled_from(["hold", "exclude"]))
def test_it_always_sums_to_the_pool_under_any_rules(contrib, pool, minimum, cap, excluded, flagged, policy):
    rules = AllocationRules(minimum_payout=minimum, cap_per_client=cap, excluded=frozenset(excluded),
                            flagged=frozenset(flagged), flagged_policy=policy)
    result = allocate(contrib, pool, rules)
    assert sum(result.amounts.values()) + result.retained == pool
    assert result.retained >= 0
    assert all(a >= max(minimum, 1) for a in result.amounts.values())
    assert cap is None or all(a <= cap for a in result.amounts.values())
    assert not set(result.amounts) & excluded
    if policy == "exclude":
        assert not set(result.amounts) & flagged
    assert set(result.held) == set(result.amounts) & (flagged if policy == "hold" else set())
    eligible = [c for c, w in contrib.items() if Fraction(w) > 0 and c not in excluded
                and not (policy == "exclude" and c in flagged)]
    if minimum == 0 and eligible and (cap is None or cap * len(eligible) >= pool):
        assert result.retained == 0  # the rules allow paying everything, so everything is paid


@settings(max_examples=100, deadline=None)
@given(contributions, pools)
def test_it_does_not_depend_on_the_order_of_the_input(contrib, pool):
    forward = allocate(dict(contrib), pool)
    backward = allocate(dict(reversed(list(contrib.items()))), pool)
    assert forward.amounts == backward.amounts


def test_it_breaks_ties_deterministically_by_client_id():
    result = allocate({"c": 1, "a": 1, "b": 1}, 100)
    assert result.amounts == {"a": 34, "b": 33, "c": 33}


def test_it_gives_leftover_units_to_the_largest_fractional_parts():
    assert largest_remainder({"x": Fraction(1), "y": Fraction(2), "z": Fraction(7)}, 11) == {"x": 1, "y": 2, "z": 8}


def test_it_redistributes_capped_amounts_by_water_filling():
    result = allocate({"big": 90, "mid": 6, "small": 4}, 1000, AllocationRules(cap_per_client=500))
    assert result.amounts == {"big": 500, "mid": 300, "small": 200}
    assert result.capped == {"big"}


def test_it_retains_what_no_one_may_receive_under_the_cap():
    result = allocate({"a": 1, "b": 1}, 1000, AllocationRules(cap_per_client=300))
    assert result.amounts == {"a": 300, "b": 300} and result.retained == 400


def test_it_drops_the_smallest_contributors_below_the_minimum_and_shares_their_part():
    result = allocate({"a": 50, "b": 25, "c": 25, "d": 1}, 100, AllocationRules(minimum_payout=20))
    assert result.amounts == {"a": 50, "b": 25, "c": 25}
    assert result.not_paid == {"d": "below minimum payout"}
    assert sum(result.amounts.values()) == 100


def test_it_retains_the_pool_when_it_is_below_the_minimum():
    result = allocate({"a": 1}, 10, AllocationRules(minimum_payout=11))
    assert result.amounts == {} and result.retained == 10


def test_it_holds_flagged_clients_and_excludes_suspended_ones():
    rules = AllocationRules(excluded=frozenset({"s"}), flagged=frozenset({"f"}))
    result = allocate({"a": 1, "f": 1, "s": 2}, 100, rules)
    assert result.amounts == {"a": 50, "f": 50}
    assert result.held == {"f": 50} and result.payable == {"a": 50}
    assert result.not_paid == {"s": "suspended"}


def test_it_sums_rows_exactly_whatever_their_order():
    rows = [("a", "0.1"), ("a", "0.2"), ("b", Decimal("0.3"))]
    assert aggregate(rows) == aggregate(reversed(rows)) == {"a": Fraction(3, 10), "b": Fraction(3, 10)}
    assert contribution_digest(aggregate(rows)) == contribution_digest({"b": "0.3", "a": "0.3"})


@pytest.mark.parametrize("contrib, pool, message", [
    ({"a": -1}, 10, "negative"),
    ({"a": float("nan")}, 10, "finite"),
    ({"a": "lots"}, 10, "must be a number"),
    ({"a": True}, 10, "must be a number"),
    ({"bad id!": 1}, 10, "invalid client id"),
    ({"a": 1}, -5, "pool must be >= 0"),
    ({"a": 1}, 2.5, "integer number of minor units"),
])
def test_it_refuses_bad_input_with_a_named_error(contrib, pool, message):
    with pytest.raises(InvalidInput, match=message):
        allocate(contrib, pool)


@pytest.mark.parametrize("kwargs, message", [
    ({"minimum_payout": -1}, "minimum_payout"),
    ({"cap_per_client": 0}, "cap_per_client"),
    ({"flagged_policy": "maybe"}, "flagged_policy"),
    ({"excluded": "abc"}, "collection of client ids"),
])
def test_it_validates_rules(kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        AllocationRules(**kwargs)
