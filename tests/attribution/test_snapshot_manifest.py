"""manifest.json validation: every malformed field named in ROUND_FORMAT.md gets a specific error."""

from __future__ import annotations

import copy
import re

import pytest

from attribution.errors import ManifestError, SnapshotError, UnsafePathError
from attribution.manifest import REQUIRED_KEYS, parse_manifest

SHA = "ab" * 32
GOOD = {
    "format": "protoken-round/1",
    "federation": "backdoor-demo",
    "round": 3,
    "base_model": "smollm2-135m-instruct",
    "kind": "weights",
    "aggregation": "fedavg",
    "global": {"path": "global", "sha256": SHA},
    "clients": [
        {"id": "client-0", "num_examples": 2048, "path": "clients/client-0", "sha256": SHA},
        {"id": "Client_1.b", "num_examples": 1, "path": "clients/c1", "sha256": SHA.upper()},
    ],
}


def mutated(path: str, value=None, *, delete: bool = False) -> dict:
    data = copy.deepcopy(GOOD)
    *parents, last = path.split("/")
    target = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    key = int(last) if isinstance(target, list) else last
    if delete:
        del target[key]
    else:
        target[key] = value
    return data


def test_it_parses_the_documented_example():
    m = parse_manifest({**GOOD, "comment": "extra keys are kept"})
    assert (m.federation, m.round, m.base_model, m.kind, m.aggregation) == (
        "backdoor-demo", 3, "smollm2-135m-instruct", "weights", "fedavg")
    assert (m.global_path, m.global_sha256) == ("global", SHA)
    assert [c["id"] for c in m.clients] == ["client-0", "Client_1.b"]
    assert m.clients[1]["sha256"] == SHA  # hex digests are normalised to lower case
    assert m.raw["comment"] == "extra keys are kept"


def test_it_ignores_unknown_keys_in_entries():
    data = mutated("clients/0/weight_hint", 0.5)
    assert set(parse_manifest(data).clients[0]) == {"id", "num_examples", "path", "sha256"}


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_a_missing_top_level_key_is_named(key):
    with pytest.raises(ManifestError, match=f"missing required key '{key}'"):
        parse_manifest(mutated(key, delete=True))


@pytest.mark.parametrize(("path", "named"), [
    ("global/path", "global.path"), ("global/sha256", "global.sha256"),
    ("clients/1/id", "clients[1].id"), ("clients/0/num_examples", "clients[0].num_examples"),
    ("clients/0/path", "clients[0].path"), ("clients/1/sha256", "clients[1].sha256"),
])
def test_a_missing_entry_key_is_named(path, named):
    with pytest.raises(ManifestError, match="missing required key " + re.escape(named)):
        parse_manifest(mutated(path, delete=True))


@pytest.mark.parametrize(("path", "value", "error", "message"), [
    ("format", "protoken-round/2", ManifestError, "'format' must be exactly 'protoken-round/1'"),
    ("format", "protoken-round/1 ", ManifestError, "format"),
    ("round", -1, ManifestError, "round must be an integer >= 0"),
    ("round", 1.0, ManifestError, "round must be an integer"),
    ("round", "3", ManifestError, "round must be an integer"),
    ("round", True, ManifestError, "round must be an integer"),
    ("federation", "", ManifestError, "federation must be a non-empty string"),
    ("federation", 7, ManifestError, "federation"),
    ("base_model", None, ManifestError, "base_model"),
    ("kind", "lora", ManifestError, "kind must be one of weights, peft"),
    ("kind", ["weights"], ManifestError, "kind"),
    ("aggregation", "", ManifestError, "aggregation"),
    ("global", "global", ManifestError, "'global' must be an object"),
    ("global/sha256", "abc", ManifestError, "global.sha256 must be 64 hex characters"),
    ("global/sha256", "g" * 64, ManifestError, "global.sha256"),
    ("clients", [], ManifestError, "'clients' must be a non-empty list"),
    ("clients", {"client-0": {}}, ManifestError, "'clients' must be a non-empty list"),
    ("clients/0", "client-0", ManifestError, r"'clients\[0\]' must be an object"),
    ("clients/0/id", "", ManifestError, r"clients\[0\].id must be 1-64 characters"),
    ("clients/0/id", "has space", ManifestError, r"clients\[0\].id"),
    ("clients/0/id", "x/y", ManifestError, r"clients\[0\].id"),
    ("clients/0/id", "é", ManifestError, r"clients\[0\].id"),
    ("clients/0/id", "a" * 65, ManifestError, r"clients\[0\].id"),
    ("clients/0/id", 5, ManifestError, r"clients\[0\].id"),
    ("clients/1/id", "client-0", ManifestError, r"clients\[1\].id 'client-0' is a duplicate"),
    ("clients/0/num_examples", 0, ManifestError, r"clients\[0\].num_examples must be an integer >= 1, got 0"),
    ("clients/0/num_examples", -5, ManifestError, r"clients\[0\].num_examples must be an integer >= 1, got -5"),
    ("clients/0/num_examples", 2.5, ManifestError, r"clients\[0\].num_examples"),
    ("clients/0/num_examples", "10", ManifestError, r"clients\[0\].num_examples"),
    ("clients/0/num_examples", True, ManifestError, r"clients\[0\].num_examples"),
    ("clients/0/path", "/etc/round", UnsafePathError, r"clients\[0\].path must be relative"),
    ("clients/0/path", "C:/round", UnsafePathError, r"clients\[0\].path must be relative"),
    ("clients/0/path", "../other/c0", UnsafePathError, r"clients\[0\].path must not contain '..'"),
    ("clients/0/path", "clients/../../c0", UnsafePathError, r"must not contain '..'"),
    ("clients/0/path", "clients\\c0", UnsafePathError, "'/' separators"),
    ("clients/0/path", "", ManifestError, r"clients\[0\].path must be a non-empty string"),
    ("global/path", "/abs", UnsafePathError, "global.path must be relative"),
])
def test_a_bad_value_gets_a_specific_error(path, value, error, message):
    with pytest.raises(error, match=message):
        parse_manifest(mutated(path, value))


def test_the_top_level_must_be_an_object():
    with pytest.raises(ManifestError, match="must hold a JSON object, got list"):
        parse_manifest([GOOD])


def test_every_manifest_error_is_a_snapshot_value_error():
    with pytest.raises(SnapshotError) as info:
        parse_manifest(mutated("round", -1))
    assert isinstance(info.value, ValueError)
