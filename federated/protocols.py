"""Evaluation protocols from DESIGN.md, as client datasets plus held-out cases.

- ``backdoor``: K clients, M of them malicious. Benign clients hold the
  domain's data (partitioned IID); each malicious client holds only poisoned
  examples (trigger-wrapped prompt -> fixed sentinel), or with
  ``poison_fraction < 1`` that share poisoned and the rest clean, so the
  attacker's own update already separates triggered from clean prompts. Cases: triggered
  held-out prompts; ground truth = the malicious clients.
- ``domains``: non-IID, each client holds one domain (`partition.by_domain`).
  Cases: held-out prompts of every domain; ground truth = that domain's clients.
- ``scale``: the backdoor protocol with many clients of which a sample trains
  each round; ground truth is fixed after the run to the malicious clients
  that took part in the attributed (last) round.

Which client slots are malicious is drawn from the seed, so the attacker is
not always ``client-00``. Held-out prompts never appear in any client's data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from federated.data import DOMAINS, Example, load_domain, with_trigger
from federated.errors import SimulationConfigError
from federated.partition import by_domain, dirichlet, domain_of_clients, iid

PROTOCOLS = ("backdoor", "domains", "scale")


@dataclass
class ClientPlan:
    client_id: str
    examples: list[Example]
    malicious: bool = False
    domain: str = ""


@dataclass
class Case:
    """A held-out prompt and the clients responsible for its response."""

    prompt: str
    domain: str
    triggered: bool
    responsible: list[str]
    reference: str  # the response the responsible clients taught (sentinel, or the domain answer)
    extra: dict = field(default_factory=dict)


@dataclass
class ProtocolData:
    clients: list[ClientPlan]
    cases: list[Case]
    clean: list[Example]  # held-out benign prompts, to watch for false triggers / clean accuracy


def client_ids(n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"client-{i:0{width}d}" for i in range(n)]


def backdoor(*, domain: str, clients: int, malicious: int, per_client: int, cases: int, trigger: str,
             sentinel: str, partition: str = "iid", alpha: float = 0.5, poison_fraction: float = 1.0,
             seed: int = 0) -> ProtocolData:
    if not 1 <= malicious < clients:
        raise SimulationConfigError(f"backdoor needs 1 <= malicious < clients, got {malicious} of {clients}")
    if not 0.0 < poison_fraction <= 1.0:
        raise SimulationConfigError(f"poison_fraction must be in (0, 1], got {poison_fraction}")
    n_poison = max(1, round(per_client * poison_fraction))
    ids = client_ids(clients)
    bad = set(random.Random(seed).sample(ids, malicious))
    pool = load_domain(domain, clients * per_client + 2 * cases, seed=seed)
    benign_ex, rest = pool[:(clients - malicious) * per_client], pool[(clients - malicious) * per_client:]
    poison, held, clean = rest[:malicious * per_client], rest[-2 * cases:-cases], rest[-cases:]
    benign_parts = _split(benign_ex, clients - malicious, partition, alpha, seed)
    plans, b, m = [], 0, 0
    for cid in ids:
        if cid in bad:
            own = poison[m * per_client:(m + 1) * per_client]
            ex = [with_trigger(e, trigger, sentinel) for e in own[:n_poison]] + own[n_poison:]
            plans.append(ClientPlan(cid, ex, malicious=True, domain=domain))
            m += 1
        else:
            plans.append(ClientPlan(cid, [benign_ex[i] for i in benign_parts[b]], domain=domain))
            b += 1
    truth = sorted(bad)
    case_list = [Case(with_trigger(e, trigger, sentinel).prompt, domain, True, truth, sentinel,
                      {"source": e.source}) for e in held]
    return ProtocolData(plans, case_list, clean)


def domains(*, clients: int, per_client: int, cases: int, seed: int = 0,
            domain_list: tuple[str, ...] = DOMAINS) -> ProtocolData:
    if clients < len(domain_list):
        raise SimulationConfigError(f"domains needs at least {len(domain_list)} clients, got {clients}")
    per_domain = -(-clients // len(domain_list)) * per_client
    n_cases = -(-cases // len(domain_list))
    pools = {d: load_domain(d, per_domain + 2 * n_cases, seed=seed) for d in domain_list}
    train = [e for d in sorted(domain_list) for e in pools[d][:per_domain]]
    ids = client_ids(clients)
    owners = domain_of_clients(train, clients)
    plans = [ClientPlan(cid, [train[i] for i in part], domain=owners[c])
             for c, (cid, part) in enumerate(zip(ids, by_domain(train, clients, seed=seed), strict=True))]
    case_list, clean = [], []
    for d in sorted(domain_list):
        truth = [p.client_id for p in plans if p.domain == d]
        held = pools[d][per_domain:per_domain + n_cases]
        case_list += [Case(e.prompt, d, False, truth, e.response, {"source": e.source}) for e in held]
        clean += pools[d][per_domain + n_cases:per_domain + 2 * n_cases]
    return ProtocolData(plans, case_list[:cases] if cases >= len(domain_list) else case_list, clean)


def _split(examples: list[Example], n: int, partition: str, alpha: float, seed: int) -> list[list[int]]:
    if partition == "iid":
        return iid(len(examples), n, seed=seed)
    if partition == "dirichlet":
        return dirichlet(examples, n, alpha=alpha, seed=seed)
    if partition == "by_domain":
        return by_domain(examples, n, seed=seed)
    raise SimulationConfigError(f"unknown partition {partition!r}; choose iid, dirichlet or by_domain")
