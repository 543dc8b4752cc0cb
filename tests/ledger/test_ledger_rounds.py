"""Update screening straight from `protoken-round/1` folders (safetensors read without the engine)."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ledger.errors import InvalidInput
from ledger.inputs import RoundFolder, TensorFile, rounds_statistics
from ledger.screening import screen_updates

CLIENTS = [f"client-{i}" for i in range(8)]
MALICIOUS = {"client-1", "client-5"}
TENSORS = {"model.layers.1.self_attn.o_proj.weight": (48, 48), "model.layers.1.mlp.down_proj.weight": (48, 96),
           "lm_head.weight": (64, 48)}


def _write(folder, tensors) -> str:
    folder.mkdir(parents=True)
    path = folder / "model.safetensors"
    save_file(tensors, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_round(root, number, previous, rng, dtype=torch.float32):
    """Global = FedAvg of clients; benign clients step towards a shared target, malicious ones elsewhere."""
    folder = root / f"round-{number:04d}"
    shared = {n: torch.from_numpy(rng.normal(size=s)) for n, s in TENSORS.items()}
    clients = {}
    for client in CLIENTS:
        step = {n: torch.from_numpy(rng.normal(size=s)) * (1.5 if client in MALICIOUS else 0.3) for n, s in TENSORS.items()}
        direction = step if client in MALICIOUS else {n: shared[n] + step[n] for n in TENSORS}
        clients[client] = {n: (previous[n] + 0.01 * direction[n]).to(dtype) for n in TENSORS}
    global_ = {n: sum(clients[c][n].double() for c in CLIENTS).div(len(CLIENTS)).to(dtype) for n in TENSORS}
    manifest = {"format": "protoken-round/1", "federation": "sim", "round": number, "base_model": "tiny",
                "kind": "weights", "aggregation": "fedavg",
                "global": {"path": "global", "sha256": _write(folder / "global", global_)},
                "clients": [{"id": c, "num_examples": 10, "path": f"clients/{c}",
                             "sha256": _write(folder / "clients" / c, clients[c])} for c in CLIENTS]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, {n: t.double() for n, t in global_.items()}


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    root = tmp_path_factory.mktemp("rounds")
    rng = np.random.default_rng(0)
    state = {n: torch.from_numpy(rng.normal(size=s)) for n, s in TENSORS.items()}
    folders = []
    for number in range(4):
        folder, state = write_round(root, number, state, rng)
        folders.append(folder)
    return folders


def test_it_flags_the_malicious_clients_from_round_folders(rounds):
    result = screen_updates(rounds_statistics(rounds))
    assert result.flagged == MALICIOUS
    assert {row["client_id"] for row in result.table} == set(CLIENTS)


def test_it_can_restrict_the_screen_to_some_modules(rounds):
    stats = rounds_statistics(rounds, modules=["o_proj"])
    assert screen_updates(stats).flagged == MALICIOUS


def test_it_reads_bf16_tensors_exactly(tmp_path):
    values = torch.randn(5, 3).to(torch.bfloat16)
    save_file({"w": values, "v": torch.arange(4, dtype=torch.float32)}, str(tmp_path / "t.safetensors"))
    tensors = TensorFile(tmp_path / "t.safetensors")
    assert np.array_equal(tensors.rows("w", 1, 4), values[1:4].double().numpy())
    assert np.array_equal(tensors.rows("v", 0, 4).reshape(-1), np.arange(4.0))


def test_it_reads_bf16_rounds(tmp_path):
    rng = np.random.default_rng(1)
    state = {n: torch.from_numpy(rng.normal(size=s)) for n, s in TENSORS.items()}
    folders = []
    for number in range(3):
        folder, state = write_round(tmp_path, number, state, rng, dtype=torch.bfloat16)
        folders.append(folder)
    assert screen_updates(rounds_statistics(folders)).flagged == MALICIOUS


def test_it_refuses_a_modified_weights_file(rounds, tmp_path):
    copy = tmp_path / "round"
    shutil.copytree(rounds[0], copy)
    with (copy / "clients" / "client-0" / "model.safetensors").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(InvalidInput, match="SHA-256 does not match"):
        RoundFolder(copy)


def test_it_refuses_pickles_anywhere_in_the_round(rounds, tmp_path):
    copy = tmp_path / "round"
    shutil.copytree(rounds[0], copy)
    (copy / "clients" / "client-3" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InvalidInput, match="pickle files are refused"):
        RoundFolder(copy)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("round"), "missing required key 'round'"),
    (lambda m: m.update(format="other/1"), "not a protoken-round/1 folder"),
    (lambda m: m["clients"][0].update(path="../escape"), "must be relative"),
    (lambda m: m.update(clients=[]), "non-empty list"),
])
def test_it_refuses_malformed_manifests(rounds, tmp_path, change, message):
    copy = tmp_path / "round"
    shutil.copytree(rounds[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInput, match=message):
        RoundFolder(copy)
