"""The worker's round cache: LRU, bounded by the loaded rounds' memory."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from audits.engine import RoundCache


@dataclass
class Loaded:
    name: str
    nbytes: int


def _load(cache: RoundCache, name: str, nbytes: int) -> Loaded:
    return cache.get((name,), lambda: Loaded(name, nbytes))


def test_it_reuses_a_cached_round():
    cache = RoundCache(100)
    first = _load(cache, "a", 40)
    assert _load(cache, "a", 40) is first
    assert cache.loads == 1


def test_it_evicts_the_least_recently_used_round_to_stay_within_budget():
    cache = RoundCache(100)
    _load(cache, "a", 40)
    _load(cache, "b", 40)
    _load(cache, "a", 40)  # a is now the most recent
    _load(cache, "c", 40)
    assert cache.keys() == [("a",), ("c",)]
    assert cache.nbytes == 80 <= cache.max_bytes


def test_it_never_keeps_a_round_larger_than_the_budget():
    cache = RoundCache(100)
    _load(cache, "a", 40)
    big = _load(cache, "huge", 500)
    assert big.name == "huge"
    assert cache.keys() == [("a",)]


def test_it_refuses_a_negative_budget():
    with pytest.raises(ValueError, match="ROUND_CACHE_BYTES must be >= 0"):
        RoundCache(-1)
