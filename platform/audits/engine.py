"""The worker's side of the engine: a bounded cache of loaded rounds and one call per generation.

Loading a round (base model + global + client slices) costs far more than
attributing one answer, so each worker process keeps recently used rounds in
an LRU cache bounded by their memory (`LoadedRound.nbytes` summed against
ROUND_CACHE_BYTES). A round larger than the whole budget is used once and
not kept. The cache is keyed by the round's row id *and* its global sha256,
so a re-registered database (tests, restores) can never serve stale weights.

The engine is only reached through its public facade (`attribution.load_round`,
`attribution.attribute`, `AttributionConfig`, `attribution.lineage`); this module never imports
Django models beyond `Round`, and holds no database connection while the
engine runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from registry.artifacts import local_folder
from registry.models import Round


class RoundCache:
    """LRU of loaded rounds, bounded by the sum of their `nbytes`."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"ROUND_CACHE_BYTES must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    @property
    def nbytes(self) -> int:
        return sum(item.nbytes for item in self._items.values())

    def keys(self) -> list[tuple]:
        return list(self._items)

    def get(self, key: tuple, loader: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        loaded = loader()
        self.loads += 1
        with self._lock:
            self._admit(key, loaded)
        return loaded

    def _admit(self, key: tuple, loaded: Any) -> None:
        if loaded.nbytes > self.max_bytes:
            return  # larger than the whole budget: used once, never kept
        self._items[key] = loaded
        while self.nbytes > self.max_bytes:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every round and reset the load counter."""
        with self._lock:
            self._items.clear()
            self.loads = 0


_cache: RoundCache | None = None


def round_cache() -> RoundCache:
    global _cache
    if _cache is None:
        _cache = RoundCache(settings.ROUND_CACHE_BYTES)
    return _cache


def loaded_round(round_: Round, config):
    """The engine's `LoadedRound` for a registered round, from the cache when possible."""
    # Load on the device and in the dtype the run's config names, so the provenance stored with
    # each result (which includes the config) says how its numbers were computed.
    device, dtype = config.device, config.dtype
    key = (round_.pk, round_.global_sha256, device, dtype)

    def load():
        from attribution import load_round
        from attribution.config import DTYPES

        folder = local_folder(prefix=round_.artifact_path, names=round_.files)
        return load_round(folder, device=device, dtype=DTYPES[dtype], config=config)

    return round_cache().get(key, load)


@dataclass(frozen=True)
class EngineSettings:
    method_version: str
    config: Any  # attribution.AttributionConfig
    config_hash: str


def engine_settings() -> EngineSettings:
    """The method version and config every run uses; ATTRIBUTION_CONFIG overrides the defaults."""
    from attribution import METHOD_VERSION, AttributionConfig

    config = AttributionConfig(**{"device": settings.ATTRIBUTION_DEVICE, **settings.ATTRIBUTION_CONFIG})
    return EngineSettings(METHOD_VERSION, config, config.config_hash())


def run_engine(loaded, *, config, **item):
    """`attribution.attribute` for one item (prompt, response or max_new_tokens, chat_template)."""
    from attribution import attribute

    return attribute(loaded, config=config, **item)


def run_engine_batch(loaded, *, items: list[dict], config) -> list:
    """`attribution.attribute_batch`: one streamed pass over the clients for every item."""
    from attribution import attribute_batch

    return attribute_batch(loaded, items, config)


def run_engine_lineage(loaded, round_: Round, *, items: list[dict], config, credit: str) -> list:
    """`attribution.lineage.attribute_lineage` over the federation's registered rounds up to `round_`.

    The attributed round comes from the cache; earlier rounds are handed over as
    folders, which the engine loads one at a time and only as far back as it
    has to walk, so they do not crowd the cache out.
    """
    from attribution.config import DTYPES
    from attribution.lineage import attribute_lineage

    earlier = Round.objects.filter(federation_id=round_.federation_id, number__lt=round_.number).order_by("number")
    folders = [local_folder(prefix=r.artifact_path, names=r.files) for r in earlier]
    return attribute_lineage([*folders, loaded], items, config, device=config.device, dtype=DTYPES[config.dtype],
                             credit=credit)
