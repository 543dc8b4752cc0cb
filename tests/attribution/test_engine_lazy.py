"""Large `weights` rounds stay on disk: clients are read chunk by chunk, only the tensors needed."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from attribution import AttributionConfig, load_round, teacher_forced_attribute
from attribution.errors import HashMismatchError, WeightsError
from attribution.loaded import FileSource, MemorySource

PROMPT = [30, 31, 32, 33, 34]


@pytest.mark.parametrize("kind,tied", [("slice", False), ("full", False), ("slice", True)])
def test_it_gives_the_same_numbers_from_disk_as_from_memory(engine_round_dir, kind, tied):
    path = engine_round_dir("llama", kind, tied=tied, n_clients=4)
    in_memory, on_disk = load_round(path), load_round(path, max_resident_bytes=0)
    assert isinstance(in_memory.source, MemorySource) and isinstance(on_disk.source, FileSource)
    for config in (AttributionConfig(client_chunk_size=3), AttributionConfig(last_n_blocks=2, target="logprob")):
        a = teacher_forced_attribute(in_memory, PROMPT, [7, 8, 9], config=config)
        b = teacher_forced_attribute(on_disk, PROMPT, [7, 8, 9], config=config)
        assert torch.equal(a.token_scores, b.token_scores)
    assert on_disk.nbytes < in_memory.nbytes


def test_it_reads_only_the_head_rows_it_needs(engine_round_dir):
    loaded = load_round(engine_round_dir("llama", "slice", n_clients=4), max_resident_bytes=0)
    rows = torch.tensor([3, 17, 200])
    values = loaded.source.params(0, ["lm_head", "model.layers.1.mlp.up_proj"], {"lm_head": rows})
    assert values["lm_head"].weight.shape == (3, loaded.model.config.hidden_size)
    full = load_file(loaded.source.files[0])["lm_head.weight"]
    assert torch.equal(values["lm_head"].weight, full[rows])
    assert values["model.layers.1.mlp.up_proj"].weight is not None
    # Client 1 holds no lm_head: the base value is used, nothing is read.
    assert loaded.source.params(1, ["lm_head"], {"lm_head": rows})["lm_head"].weight is None


def _copy_round(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_it_refuses_non_finite_client_tensors_when_it_reads_them(engine_round_dir, tmp_path):
    path = _copy_round(engine_round_dir("llama", "slice", n_clients=4), tmp_path / "round")
    file = path / "clients" / "c2" / "model.safetensors"
    tensors = load_file(file)
    name = "model.layers.1.self_attn.o_proj.weight"  # tracked under the default selection
    tensors[name][0, 0] = float("nan")
    save_file(tensors, file)
    with pytest.raises(HashMismatchError):
        load_round(path, max_resident_bytes=0)
    loaded = load_round(path, max_resident_bytes=0, verify=False)
    with pytest.raises(WeightsError, match="'c2'.*NaN"):
        teacher_forced_attribute(loaded, PROMPT, [1])


def test_it_refuses_unknown_parameters_in_headers_at_load(engine_round_dir, tmp_path):
    path = _copy_round(engine_round_dir("llama", "slice", n_clients=4), tmp_path / "round")
    file = path / "clients" / "c1" / "model.safetensors"
    tensors = load_file(file)
    tensors["model.layers.7.mlp.up_proj.weight"] = torch.zeros(2, 2)
    save_file(tensors, file)
    with pytest.raises(WeightsError, match="model.layers.7.mlp.up_proj.weight"):
        load_round(path, max_resident_bytes=0, verify=False)
