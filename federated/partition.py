"""Partitioners: split a list of examples among clients, deterministically for a seed.

All three return ``list[list[int]]``: for each client, indices into the input
list. Every index is used at most once, so client datasets never overlap.

- `iid`: shuffle, then deal round-robin (sizes differ by at most one).
- `by_domain`: non-IID, one domain per client; domains are assigned to clients
  round-robin (client i gets domain i mod D) and a domain's examples are dealt
  among its clients.
- `dirichlet`: label-skewed non-IID; for each domain, client proportions are
  drawn from Dirichlet(alpha) (small alpha = more skew) and the domain's
  shuffled examples are cut at those proportions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from federated.data import Example
from federated.errors import DatasetError

PARTITIONERS = ("iid", "by_domain", "dirichlet")


def iid(n_examples: int, n_clients: int, *, seed: int = 0) -> list[list[int]]:
    _check(n_examples, n_clients)
    order = list(range(n_examples))
    random.Random(seed).shuffle(order)
    return [order[c::n_clients] for c in range(n_clients)]


def by_domain(examples: Sequence[Example], n_clients: int, *, seed: int = 0) -> list[list[int]]:
    domains = sorted({e.domain for e in examples})
    _check(len(examples), n_clients)
    if n_clients < len(domains):
        raise DatasetError(f"by_domain needs at least one client per domain: {n_clients} clients, "
                           f"{len(domains)} domains ({', '.join(domains)})")
    rng = random.Random(seed)
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for d, domain in enumerate(domains):
        idx = [i for i, e in enumerate(examples) if e.domain == domain]
        rng.shuffle(idx)
        owners = list(range(d, n_clients, len(domains)))
        for k, i in enumerate(idx):
            parts[owners[k % len(owners)]].append(i)
    return parts


def domain_of_clients(examples: Sequence[Example], n_clients: int) -> list[str]:
    """The domain `by_domain` gives each client (client i gets domain i mod D)."""
    domains = sorted({e.domain for e in examples})
    return [domains[c % len(domains)] for c in range(n_clients)]


def dirichlet(examples: Sequence[Example], n_clients: int, *, alpha: float = 0.5, seed: int = 0) -> list[list[int]]:
    _check(len(examples), n_clients)
    if not alpha > 0:
        raise DatasetError(f"dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for domain in sorted({e.domain for e in examples}):
        idx = np.array([i for i, e in enumerate(examples) if e.domain == domain])
        rng.shuffle(idx)
        cuts = (np.cumsum(rng.dirichlet([alpha] * n_clients))[:-1] * len(idx)).astype(int)
        for c, chunk in enumerate(np.split(idx, cuts)):
            parts[c].extend(int(i) for i in chunk)
    return parts


def _check(n_examples: int, n_clients: int) -> None:
    if n_clients < 1:
        raise DatasetError(f"need at least 1 client, got {n_clients}")
    if n_examples < n_clients:
        raise DatasetError(f"cannot split {n_examples} examples among {n_clients} clients")
