import pytest

from federated.data import Example
from federated.errors import DatasetError
from federated.partition import by_domain, dirichlet, domain_of_clients, iid


def examples(n_per=10, domains=("a", "b", "c", "d")):
    return [Example(f"{d}{i}", "r", d, f"{d}:{i}") for d in domains for i in range(n_per)]


def flat(parts):
    return [i for p in parts for i in p]


def test_it_is_deterministic_for_a_seed_and_changes_with_it():
    ex = examples()
    assert iid(40, 6, seed=3) == iid(40, 6, seed=3)
    assert iid(40, 6, seed=3) != iid(40, 6, seed=4)
    assert by_domain(ex, 8, seed=1) == by_domain(ex, 8, seed=1)
    assert dirichlet(ex, 5, alpha=0.3, seed=2) == dirichlet(ex, 5, alpha=0.3, seed=2)
    assert dirichlet(ex, 5, alpha=0.3, seed=2) != dirichlet(ex, 5, alpha=0.3, seed=9)


@pytest.mark.parametrize("split", [
    lambda ex: iid(len(ex), 6, seed=0),
    lambda ex: by_domain(ex, 8, seed=0),
    lambda ex: dirichlet(ex, 5, alpha=0.5, seed=0),
])
def test_it_uses_every_example_exactly_once(split):
    ex = examples()
    assert sorted(flat(split(ex))) == list(range(len(ex)))


def test_iid_sizes_differ_by_at_most_one():
    sizes = [len(p) for p in iid(41, 6, seed=0)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 41


def test_by_domain_gives_each_client_one_domain_two_clients_per_domain():
    ex = examples()
    parts = by_domain(ex, 8, seed=0)
    owners = domain_of_clients(ex, 8)
    for c, part in enumerate(parts):
        assert {ex[i].domain for i in part} == {owners[c]}
    assert sorted(owners) == ["a", "a", "b", "b", "c", "c", "d", "d"]


def test_small_alpha_skews_more_than_large_alpha():
    ex = examples(n_per=200)

    def purity(parts):  # mean share of each client's most common domain
        out = []
        for p in parts:
            if p:
                counts = {}
                for i in p:
                    counts[ex[i].domain] = counts.get(ex[i].domain, 0) + 1
                out.append(max(counts.values()) / len(p))
        return sum(out) / len(out)

    assert purity(dirichlet(ex, 6, alpha=0.05, seed=0)) > purity(dirichlet(ex, 6, alpha=100.0, seed=0)) + 0.2


def test_bad_requests_raise_named_errors():
    with pytest.raises(DatasetError, match="cannot split 3 examples among 6 clients"):
        iid(3, 6)
    with pytest.raises(DatasetError, match="one client per domain"):
        by_domain(examples(), 3)
    with pytest.raises(DatasetError, match="alpha must be > 0"):
        dirichlet(examples(), 3, alpha=0)
