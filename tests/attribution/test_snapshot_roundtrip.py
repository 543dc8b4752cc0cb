"""Round folders written by `write_round` read back identically, for both kinds and every tiny architecture."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from attribution.errors import ModuleSelectionError, SnapshotError
from attribution.snapshot import (
    file_sha256,
    read_round,
    slice_state_dict,
    tracked_module_names,
    write_round,
)
from attribution.snapshot_types import ClientUpdate


@pytest.mark.parametrize("kind", ["weights", "peft"])
def test_it_round_trips_every_architecture(tmp_path, tiny_model_dir, make_round, arch, kind):
    base_dir = tiny_model_dir(arch)
    path, clients = make_round(tmp_path / "round", base_dir, kind=kind, n_clients=3)
    snap = read_round(path)

    assert snap.kind == kind and snap.manifest.round == 3 and snap.manifest.federation == "test-fed"
    assert snap.client_ids == ["client-0", "client-1", "client-2"]
    assert [c.num_examples for c in snap.clients] == [c.num_examples for c in clients]
    assert snap.global_update.num_examples == sum(c.num_examples for c in clients)
    assert snap.base_model_dir == base_dir.resolve()
    for read, written in zip(snap.clients, clients, strict=True):
        assert read.tensors.keys() == written.tensors.keys()
        assert all(torch.equal(read.tensors[k], written.tensors[k]) for k in written.tensors)
        assert read.lora.keys() == written.lora.keys()
        for module, factors in written.lora.items():
            got = read.lora[module]
            assert torch.equal(got.A, factors.A) and torch.equal(got.B, factors.B)
            assert math.isclose(got.scaling, factors.scaling, rel_tol=1e-12)


def test_it_records_the_sha256_of_each_weights_file(tmp_path, tiny_model_dir, make_round):
    path, _ = make_round(tmp_path / "round", tiny_model_dir("llama"))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["global"]["sha256"] == file_sha256(path / "global" / "model.safetensors")
    for entry in manifest["clients"]:
        assert entry["path"] == f"clients/{entry['id']}"
        assert entry["sha256"] == file_sha256(path / entry["path"] / "model.safetensors")
    assert {c.client_id: c.sha256 for c in read_round(path).clients} == {
        e["id"]: e["sha256"] for e in manifest["clients"]
    }


def test_it_keeps_extra_manifest_keys_and_a_relative_base_model(tmp_path, tiny_model_dir, make_round):
    base_dir = tiny_model_dir("qwen2")
    rel = "../" + base_dir.name
    (tmp_path / base_dir.name).symlink_to(base_dir)  # so that `../<name>` exists next to the round
    path, _ = make_round(tmp_path / "round", base_dir, base_model=rel, extra={"note": "seeded"},
                         aggregation="fedprox")
    snap = read_round(path)
    assert snap.manifest.base_model == rel and snap.manifest.aggregation == "fedprox"
    assert snap.manifest.raw["note"] == "seeded"
    assert snap.base_model_dir == base_dir.resolve()


def test_verify_false_skips_only_the_hash(tmp_path, tiny_model_dir, make_round):
    path, _ = make_round(tmp_path / "round", tiny_model_dir("llama"))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["clients"][0]["sha256"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    snap = read_round(path, verify=False)
    assert snap.clients[0].sha256 == "0" * 64 and snap.clients[0].tensors


def test_it_aliases_lm_head_under_tied_embeddings(tmp_path, tiny_model_dir, load_base_tensors):
    base_dir = tiny_model_dir("llama", tied=True)
    base = load_base_tensors(base_dir)
    assert "lm_head.weight" not in base  # the file really omits the tied head
    embed = base["model.embed_tokens.weight"]
    changed = ClientUpdate("emb", 4, tensors={"model.embed_tokens.weight": embed + 1.0})
    head_only = ClientUpdate("head", 4, tensors={"lm_head.weight": embed * 2.0})
    path = write_round(tmp_path / "round", federation="f", round=0, base_model=str(base_dir), kind="weights",
                       global_update={}, clients=[changed, head_only])
    emb, head = read_round(path).clients
    assert emb.tensors["lm_head.weight"] is emb.tensors["model.embed_tokens.weight"]
    assert torch.equal(emb.tensors["lm_head.weight"], embed + 1.0)
    assert list(head.tensors) == ["lm_head.weight"]


def test_it_writes_a_shared_tensor_pair_once_each(tmp_path, tiny_model_dir, load_base_tensors):
    base_dir = tiny_model_dir("llama", tied=True)
    embed = load_base_tensors(base_dir)["model.embed_tokens.weight"] + 0.5
    # A tied model's state_dict holds the same tensor under both names; safetensors refuses shared storage.
    client = ClientUpdate("c", 1, tensors={"model.embed_tokens.weight": embed, "lm_head.weight": embed})
    path = write_round(tmp_path / "round", federation="f", round=0, base_model=str(base_dir), kind="weights",
                       global_update={}, clients=[client])
    got = read_round(path).clients[0].tensors
    assert torch.equal(got["lm_head.weight"], embed) and torch.equal(got["model.embed_tokens.weight"], embed)


def test_peft_output_loads_in_peft_and_matches_the_merged_weights(tmp_path, tiny_model_dir, make_round):
    base_dir = tiny_model_dir("qwen3")
    path, clients = make_round(tmp_path / "round", base_dir, kind="peft", n_clients=2)
    client = clients[1]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir),
                                      str(path / "clients" / client.client_id)).eval()
    merged = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with torch.no_grad():
        for module, f in client.lora.items():
            merged.get_submodule(module).weight += f.scaling * f.B @ f.A
        merged.lm_head.weight.copy_(client.tensors["lm_head.weight"])
        ids = torch.tensor([[256, 72, 101, 108, 108, 111]])
        got, want = model(ids).logits, merged(ids).logits
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert (got - AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits).abs().max() > 1e-2


def test_peft_rank_and_alpha_patterns_reproduce_each_scaling(tmp_path, tiny_model_dir, make_round):
    path, clients = make_round(tmp_path / "round", tiny_model_dir("llama"), kind="peft", n_clients=1)
    config = json.loads((path / "clients" / "client-0" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] is False
    assert {config["r"], *config["rank_pattern"].values()} == {2, 4}
    read = read_round(path).clients[0]
    assert {m: f.scaling for m, f in read.lora.items()} == pytest.approx(
        {m: f.scaling for m, f in clients[0].lora.items()})


def test_it_writes_atomically_and_leaves_nothing_after_a_crash(tmp_path, tiny_model_dir, make_round, monkeypatch):
    import attribution.snapshot as snapshot

    calls = []

    def crash_on_third(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return original(tensors, path, metadata=metadata)

    original = snapshot.save_file
    monkeypatch.setattr(snapshot, "save_file", crash_on_third)
    with pytest.raises(SnapshotError, match="No space left"):
        make_round(tmp_path / "round", tiny_model_dir("llama"))
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []  # neither the round nor its temporary folder


def test_it_validates_before_writing_anything(tmp_path, tiny_model_dir):
    base_dir = tiny_model_dir("llama")
    bad = ClientUpdate("c1", 1, tensors={"model.layers.1.mlp.up_proj.weight": torch.full((128, 64), math.nan)})
    good = ClientUpdate("c0", 1)
    with pytest.raises(SnapshotError, match=r"client 'c1'.*up_proj.*NaN"):
        write_round(tmp_path / "round", federation="f", round=0, base_model=str(base_dir), kind="weights",
                    global_update={}, clients=[good, bad])
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_to_overwrite_a_round(tmp_path, tiny_model_dir, make_round):
    path, _ = make_round(tmp_path / "round", tiny_model_dir("llama"))
    before = file_sha256(path / "manifest.json")
    with pytest.raises(SnapshotError, match="already exists"):
        make_round(path, tiny_model_dir("llama"), seed=7)
    assert file_sha256(path / "manifest.json") == before


def test_it_writes_into_an_existing_empty_folder(tmp_path, tiny_model_dir, make_round):
    (tmp_path / "round").mkdir()
    path, _ = make_round(tmp_path / "round", tiny_model_dir("llama"), n_clients=1)
    assert read_round(path).client_ids == ["client-0"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(federation=""), "federation"),
        (dict(round=-1), "round"),
        (dict(round=True), "round"),
        (dict(kind="lora"), "kind"),
        (dict(aggregation=""), "aggregation"),
        (dict(extra={"round": 9}), "overwrite required keys"),
        (dict(clients=[]), "at least one client"),
        (dict(clients=[ClientUpdate("bad id", 1)]), "bad id"),
        (dict(clients=[ClientUpdate("..", 1)]), "cannot name a folder"),
        (dict(clients=[ClientUpdate("a", 1), ClientUpdate("a", 2)]), "duplicate"),
        (dict(clients=[ClientUpdate("a", 0)]), "num_examples"),
        (dict(clients=[ClientUpdate("a", 1, tensors={"model.nope.weight": torch.zeros(1)})]), "model.nope.weight"),
        (dict(clients=[ClientUpdate("a", 1, tensors={"lm_head.weight": torch.zeros(3, 3)})]), r"shape \(3, 3\)"),
        (dict(kind="peft"), "at least one LoRA module"),
    ],
)
def test_write_round_rejects_bad_input(tmp_path, tiny_model_dir, change, message):
    args = dict(federation="f", round=0, base_model=str(tiny_model_dir("llama")), kind="weights",
                global_update={}, clients=[ClientUpdate("a", 1)])
    with pytest.raises(SnapshotError, match=message):
        write_round(tmp_path / "round", **{**args, **change})
    assert not (tmp_path / "round").exists()


def test_write_round_rejects_lora_in_a_weights_round(tmp_path, tiny_model_dir, load_base_tensors, make_peft_clients):
    base_dir = tiny_model_dir("llama")
    client = make_peft_clients(load_base_tensors(base_dir), 1, 1, seed=0)[0]
    with pytest.raises(SnapshotError, match="kind='peft'"):
        write_round(tmp_path / "round", federation="f", round=0, base_model=str(base_dir), kind="weights",
                    global_update={}, clients=[client])


# ---------------------------------------------------------------- tracked modules and slices


def test_tracked_modules_are_the_papers_by_default(tiny_model_dir, arch):
    base_dir = tiny_model_dir(arch)
    expected = ["model.layers.1.self_attn.o_proj", "model.layers.1.mlp", "lm_head"]
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    assert tracked_module_names(model) == expected
    assert tracked_module_names(model.config) == expected
    assert tracked_module_names(base_dir) == expected
    for name in expected:
        model.get_submodule(name)  # every name is a real module of this architecture


def test_tracked_modules_widen_to_the_last_n_blocks(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("gemma3_text"))
    assert tracked_module_names(model, last_n_blocks=2, include_lm_head=False) == [
        "model.layers.0.self_attn.o_proj", "model.layers.0.mlp",
        "model.layers.1.self_attn.o_proj", "model.layers.1.mlp",
    ]
    assert tracked_module_names({"model_type": "gemma3", "text_config": {"num_hidden_layers": 4}}) == [
        "model.language_model.layers.3.self_attn.o_proj", "model.language_model.layers.3.mlp", "lm_head",
    ]
    for bad in (0, 3, True, 1.0):
        with pytest.raises(ModuleSelectionError, match="last_n_blocks"):
            tracked_module_names(model, last_n_blocks=bad)
    with pytest.raises(ModuleSelectionError, match="num_hidden_layers"):
        tracked_module_names({"model_type": "llama"})


def test_slice_keeps_whole_modules_only():
    state = {name: torch.zeros(1) for name in [
        "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.mlp_extra.weight", "model.layers.11.mlp.up_proj.weight",
        "model.layers.1.self_attn.o_proj.weight", "model.layers.1.self_attn.q_proj.weight", "lm_head.weight",
    ]}
    got = slice_state_dict(state, ["model.layers.1.mlp", "model.layers.1.self_attn.o_proj", "lm_head"])
    assert sorted(got) == ["lm_head.weight", "model.layers.1.mlp.down_proj.weight",
                           "model.layers.1.mlp.up_proj.weight", "model.layers.1.self_attn.o_proj.weight"]
    assert got["lm_head.weight"] is state["lm_head.weight"]
    with pytest.raises(ModuleSelectionError, match="model.layers.7.mlp"):
        slice_state_dict(state, ["model.layers.7.mlp"])
    assert slice_state_dict(state, ["model.layers.7.mlp"], strict=False) == {}
    with pytest.raises(ModuleSelectionError, match="not one string"):
        slice_state_dict(state, "lm_head")


def test_a_slice_is_a_small_fraction_of_the_model_file(tmp_path, tiny_model_dir):
    base_dir = tiny_model_dir("llama")
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    sliced = slice_state_dict(model.state_dict(), tracked_module_names(model, include_lm_head=False))
    path = write_round(tmp_path / "round", federation="f", round=0, base_model=str(base_dir), kind="weights",
                       global_update=sliced, clients=[ClientUpdate("c", 1, tensors=sliced)])
    ratio = (path / "clients/c/model.safetensors").stat().st_size / (base_dir / "model.safetensors").stat().st_size
    # 2 of the tiny model's blocks dominate it, so one block's o_proj+mlp is well under half.
    assert 0.05 < ratio < 0.5


def test_it_reads_an_adapter_saved_by_peft_itself(tmp_path, tiny_model_dir, make_round):
    from peft import LoraConfig, get_peft_model

    base_dir = tiny_model_dir("qwen2")
    path, _ = make_round(tmp_path / "round", base_dir, kind="peft", n_clients=1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "down_proj"], modules_to_save=["lm_head"],
                        rank_pattern={"down_proj": 2}, alpha_pattern={"o_proj": 3}, init_lora_weights=False)
    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config)
    folder = path / "clients" / "client-0"
    shutil.rmtree(folder)
    peft_model.save_pretrained(str(folder))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["clients"][0]["sha256"] = file_sha256(folder / "adapter_model.safetensors")
    (path / "manifest.json").write_text(json.dumps(manifest))

    read = read_round(path).clients[0]
    assert len(read.lora) == 4 and list(read.tensors) == ["lm_head.weight"]
    for module, factors in read.lora.items():
        layer = peft_model.base_model.model.get_submodule(module)
        assert factors.scaling == pytest.approx(layer.scaling["default"])
        assert torch.equal(factors.A, layer.lora_A["default"].weight)
        assert torch.equal(factors.B, layer.lora_B["default"].weight)
    assert {f.scaling for f in read.lora.values()} == {3 / 4, 8 / 2}


def test_write_round_rejects_a_module_with_lora_and_full_tensors(tmp_path, tiny_model_dir, load_base_tensors,
                                                                 make_peft_clients):
    base_dir = tiny_model_dir("llama")
    base = load_base_tensors(base_dir)
    client = make_peft_clients(base, 1, 1, seed=0)[0]
    client.tensors["model.layers.1.self_attn.o_proj.weight"] = base["model.layers.1.self_attn.o_proj.weight"]
    with pytest.raises(SnapshotError, match=r"\['model.layers.1.self_attn.o_proj'\] have LoRA factors and full"):
        write_round(tmp_path / "round", federation="f", round=0, base_model=str(base_dir), kind="peft",
                    global_update=client, clients=[client])


def test_a_client_may_be_called_global(tmp_path, tiny_model_dir, load_base_tensors):
    base_dir = tiny_model_dir("llama")
    head = load_base_tensors(base_dir)["lm_head.weight"]
    path = write_round(tmp_path / "round", federation="f", round=0, base_model=str(base_dir), kind="weights",
                       global_update={}, clients=[ClientUpdate("global", 2, tensors={"lm_head.weight": head + 1})])
    snap = read_round(path)
    assert snap.client_ids == ["global"] and torch.equal(snap.clients[0].tensors["lm_head.weight"], head + 1)
    (path / "clients" / "global" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(SnapshotError, match=r"^client 'global' \(clients/global\): sha256"):
        read_round(path)
