"""Helpers shared by the benchmarks: project paths, scratch databases, a synthetic round, percentiles.

The synthetic round stands in for a real federated round when a benchmark
measures speed rather than accuracy: every client holds the shipped model's
tracked slice (the last block's `self_attn.o_proj` and `mlp`) perturbed by
seeded Gaussian noise scaled to each tensor's spread, and the global slice is
their FedAvg. The same seed always writes byte-identical weights.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = "smollm2-135m-instruct"


def add_project_paths() -> None:
    """Make the checkout's packages and the Django source root importable from a script."""
    for path in (CHECKOUT / "platform", CHECKOUT):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


class BenchError(RuntimeError):
    """A benchmark could not run or finish; the message says what to fix."""


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A fresh database on the server of `dbenv.database_url()`, dropped (forcibly) on exit."""
    add_project_paths()
    import dbenv

    server = dbenv.database_url()
    url = dbenv.with_database(server, name)
    _drop(server, name)
    dbenv.ensure_database(url)
    try:
        yield url
    finally:
        _drop(server, name)


def _drop(server: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    import dbenv

    with psycopg.connect(dbenv.with_database(server, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def perturbed_round(out_dir: str | Path, *, federation: str, clients: int = 8, seed: int = 0,
                    noise: float = 0.05, number: int = 0, base_model: str = SHIPPED_MODEL) -> Path:
    """Write a `protoken-round/1` folder of `clients` noisy copies of the base model's last-block slice."""
    import torch

    from attribution import write_round
    from attribution.shipped import base_model_spec, resolve_base_model
    from attribution.snapshot import tracked_module_names
    from attribution.snapshot_types import ClientUpdate

    if clients < 1:
        raise BenchError(f"a round needs at least one client, got {clients}")
    folder = resolve_base_model(base_model)
    spec = base_model_spec(folder)
    modules = tracked_module_names(folder, 1, include_lm_head=False)
    names = [k for k in spec.shapes if any(k.startswith(m + ".") for m in modules)]
    base = {k: spec.load_tensor(k) for k in names}
    updates = []
    for i in range(clients):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        tensors = {k: v + noise * v.std() * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        updates.append(ClientUpdate(f"client-{i}", num_examples=100 * (i + 1), tensors=tensors))
    total = sum(u.num_examples for u in updates)
    global_slice = {k: sum(u.tensors[k] * (u.num_examples / total) for u in updates) for k in names}
    return write_round(Path(out_dir), federation=federation, round=number, base_model=base_model,
                       kind="weights", global_update=global_slice, clients=updates)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100, linear interpolation); NaN for no values."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")
