"""read_round refuses every malformed round folder with a specific, named error."""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attribution.errors import (
    AdapterError,
    BaseModelError,
    HashMismatchError,
    KindMismatchError,
    ManifestError,
    MissingFileError,
    PickleRefusedError,
    UnsafePathError,
    WeightsError,
)
from attribution.snapshot import file_sha256, read_round


@pytest.fixture
def weights_round(tmp_path, tiny_model_dir, make_round) -> Path:
    return make_round(tmp_path / "round", tiny_model_dir("llama"))[0]


@pytest.fixture
def peft_round(tmp_path, tiny_model_dir, make_round) -> Path:
    return make_round(tmp_path / "round", tiny_model_dir("llama"), kind="peft", n_clients=2)[0]


def edit_manifest(root: Path, **changes) -> None:
    data = json.loads((root / "manifest.json").read_text())
    data.update(changes)
    (root / "manifest.json").write_text(json.dumps(data))


def rehash(root: Path) -> None:
    """Record the current sha256 of every weights file, so a test reaches the checks after hashing."""
    data = json.loads((root / "manifest.json").read_text())
    for entry in [data["global"], *data["clients"]]:
        weights = next((root / entry["path"]).glob("*.safetensors"))
        entry["sha256"] = file_sha256(weights)
    (root / "manifest.json").write_text(json.dumps(data))


def replace_weights(root: Path, rel: str, tensors: dict[str, torch.Tensor], name: str = "model.safetensors") -> None:
    save_file(tensors, str(root / rel / name), metadata={"format": "pt"})
    rehash(root)


# ---------------------------------------------------------------- folder and manifest


def test_a_missing_round_folder_is_named(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        read_round(tmp_path / "nope")


def test_a_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(MissingFileError, match=r"no manifest.json"):
        read_round(tmp_path)


def test_a_manifest_that_is_not_json_is_refused(weights_round):
    (weights_round / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid UTF-8 JSON"):
        read_round(weights_round)


def test_a_missing_key_is_named(weights_round):
    data = json.loads((weights_round / "manifest.json").read_text())
    del data["base_model"]
    (weights_round / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="missing required key 'base_model'"):
        read_round(weights_round)


def test_a_wrong_format_string_is_refused(weights_round):
    edit_manifest(weights_round, format="protoken-round/0")
    with pytest.raises(ManifestError, match="'format' must be exactly 'protoken-round/1'"):
        read_round(weights_round)


def test_an_unknown_base_model_is_named(weights_round):
    edit_manifest(weights_round, base_model="no-such-model")
    with pytest.raises(BaseModelError, match="unknown base model 'no-such-model'.*smollm2-135m-instruct"):
        read_round(weights_round)


def test_a_missing_client_folder_is_named(weights_round):
    shutil.rmtree(weights_round / "clients" / "client-1")
    with pytest.raises(MissingFileError, match=r"client 'client-1' \(clients/client-1\): folder .* does not exist"):
        read_round(weights_round)


def test_a_missing_weights_file_is_named(weights_round):
    (weights_round / "clients" / "client-2" / "model.safetensors").unlink()
    with pytest.raises(MissingFileError, match=r"client 'client-2'.*model.safetensors is missing"):
        read_round(weights_round)


@pytest.mark.parametrize("rel", ["../outside", "clients/../../outside"])
def test_a_dotdot_path_is_refused(weights_round, rel):
    data = json.loads((weights_round / "manifest.json").read_text())
    data["clients"][0]["path"] = rel
    (weights_round / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UnsafePathError, match=r"clients\[0\].path must not contain '..'"):
        read_round(weights_round)


def test_an_absolute_path_is_refused(weights_round):
    data = json.loads((weights_round / "manifest.json").read_text())
    data["global"]["path"] = str(weights_round / "global")
    (weights_round / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UnsafePathError, match="global.path must be relative"):
        read_round(weights_round)


def test_a_symlinked_folder_escaping_the_round_is_refused(weights_round, tmp_path):
    outside = tmp_path / "outside"
    shutil.move(weights_round / "clients" / "client-0", outside)
    (weights_round / "clients" / "client-0").symlink_to(outside)
    with pytest.raises(UnsafePathError, match=r"clients\[0\].path 'clients/client-0' resolves to .*outside"):
        read_round(weights_round)


def test_a_symlinked_weights_file_escaping_the_round_is_refused(weights_round, tmp_path):
    target = weights_round / "clients" / "client-0" / "model.safetensors"
    shutil.move(target, tmp_path / "elsewhere.safetensors")
    target.symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(UnsafePathError, match="outside the round folder"):
        read_round(weights_round)


def test_a_symlink_loop_is_refused(weights_round):
    shutil.rmtree(weights_round / "clients" / "client-0")
    (weights_round / "clients" / "client-0").symlink_to(weights_round / "clients" / "loop")
    (weights_round / "clients" / "loop").symlink_to(weights_round / "clients" / "client-0")
    with pytest.raises(UnsafePathError, match=r"clients\[0\].path 'clients/client-0'"):
        read_round(weights_round)


def test_a_round_path_of_the_wrong_type_is_named():
    with pytest.raises(MissingFileError, match="must be given as a path, got int"):
        read_round(3)


def test_a_symlink_that_stays_inside_the_round_is_fine(weights_round):
    shutil.move(weights_round / "clients" / "client-0", weights_round / "stored-c0")
    (weights_round / "clients" / "client-0").symlink_to(weights_round / "stored-c0")
    assert read_round(weights_round).client_ids == ["client-0", "client-1", "client-2"]


# ---------------------------------------------------------------- hashes and pickles


def test_a_wrong_hash_is_refused(weights_round):
    data = json.loads((weights_round / "manifest.json").read_text())
    data["clients"][1]["sha256"] = "f" * 64
    (weights_round / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(HashMismatchError, match=r"client 'client-1'.*manifest records f{64}"):
        read_round(weights_round)


def test_a_tampered_weights_file_is_refused(weights_round):
    path = weights_round / "global" / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(HashMismatchError, match=r"global model \(global\): sha256 of model.safetensors"):
        read_round(weights_round)


class _SideEffect:
    """Unpickling this creates the marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("rel", ["pytorch_model.bin", "global/optimizer.pt", "clients/client-1/state.pkl",
                                 "clients/client-0/deep/er/x.PTH", "notes.pickle", "clients/last.ckpt"])
def test_a_pickle_anywhere_is_refused_unopened(weights_round, tmp_path, rel):
    marker = tmp_path / "unpickled"
    (weights_round / rel).parent.mkdir(parents=True, exist_ok=True)
    (weights_round / rel).write_bytes(pickle.dumps(_SideEffect(marker)))
    (weights_round / "manifest.json").write_text("{broken")  # pickles are checked before anything is parsed
    with pytest.raises(PickleRefusedError, match=rel.replace(".", r"\.")):
        read_round(weights_round)
    assert not marker.exists()


def test_the_pickle_marker_really_fires_when_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(_SideEffect(marker)))  # the control for the test above
    assert marker.exists()


# ---------------------------------------------------------------- tensors


def test_nan_weights_are_refused(weights_round):
    replace_weights(weights_round, "clients/client-0", {"lm_head.weight": torch.full((259, 64), math.nan)})
    with pytest.raises(WeightsError, match=r"client 'client-0'.*lm_head.weight contains NaN or inf"):
        read_round(weights_round)


def test_inf_weights_are_refused(weights_round):
    tensor = torch.zeros(64, 64)
    tensor[3, 4] = math.inf
    replace_weights(weights_round, "global", {"model.layers.1.self_attn.o_proj.weight": tensor})
    with pytest.raises(WeightsError, match=r"global model.*o_proj.weight contains NaN or inf"):
        read_round(weights_round)


def test_a_wrong_shape_is_named(weights_round):
    replace_weights(weights_round, "clients/client-2", {"model.layers.1.mlp.down_proj.weight": torch.zeros(64, 64)})
    with pytest.raises(WeightsError, match=r"down_proj.weight has shape \(64, 64\), expected \(64, 128\)"):
        read_round(weights_round)


def test_an_unknown_parameter_is_named_with_a_suggestion(weights_round):
    replace_weights(weights_round, "clients/client-1", {"model.layers.1.mlp.down_prj.weight": torch.zeros(64, 128)})
    with pytest.raises(WeightsError, match=r"'model.layers.1.mlp.down_prj.weight' is not a parameter.*"
                                           r"did you mean 'model.layers.1.mlp.down_proj.weight'"):
        read_round(weights_round)


def test_integer_weights_are_refused(weights_round):
    replace_weights(weights_round, "clients/client-1", {"lm_head.weight": torch.zeros(259, 64, dtype=torch.int32)})
    with pytest.raises(WeightsError, match="dtype torch.int32"):
        read_round(weights_round)


def test_a_file_that_is_not_safetensors_is_refused(weights_round):
    (weights_round / "clients" / "client-0" / "model.safetensors").write_bytes(b"\x00" * 64)
    rehash(weights_round)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        read_round(weights_round)


# ---------------------------------------------------------------- kinds and adapters


def test_an_adapter_in_a_weights_round_is_a_kind_mismatch(weights_round):
    folder = weights_round / "clients" / "client-0"
    (folder / "model.safetensors").rename(folder / "adapter_model.safetensors")
    with pytest.raises(KindMismatchError, match=r"manifest kind is 'weights' but the folder holds adapter_model"):
        read_round(weights_round)


def test_full_weights_in_a_peft_round_are_a_kind_mismatch(peft_round):
    folder = peft_round / "clients" / "client-1"
    (folder / "adapter_model.safetensors").rename(folder / "model.safetensors")
    with pytest.raises(KindMismatchError, match=r"manifest kind is 'peft' but the folder holds model.safetensors"):
        read_round(peft_round)


def test_a_manifest_kind_flipped_to_peft_is_a_kind_mismatch(weights_round):
    edit_manifest(weights_round, kind="peft")
    with pytest.raises(KindMismatchError, match="global model"):
        read_round(weights_round)


def test_a_missing_adapter_config_is_named(peft_round):
    (peft_round / "clients" / "client-0" / "adapter_config.json").unlink()
    with pytest.raises(MissingFileError, match=r"client 'client-0'.*adapter_config.json is missing"):
        read_round(peft_round)


def edit_adapter(root: Path, rel: str, **changes) -> None:
    path = root / rel / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(("changes", "message"), [
    (dict(peft_type="IA3"), "peft_type 'IA3' is not supported; only LORA"),
    (dict(use_dora=True), r"DoRA"),
    (dict(bias="all"), r"trained biases \(bias != 'none'\)"),
    (dict(lora_bias=True), "LoRA biases"),
    (dict(fan_in_fan_out=True), "fan_in_fan_out"),
    (dict(trainable_token_indices=[1, 2]), "trainable_token_indices"),
    (dict(r=0), "r must be an integer > 0"),
    (dict(lora_alpha="8"), "lora_alpha must be a number > 0"),
    (dict(use_rslora="yes"), "use_rslora must be true or false"),
    (dict(rank_pattern={"down_proj": -1}), r"rank_pattern\['down_proj'\] must be an integer > 0"),
    (dict(target_modules=["q_proj"]), "is not matched by target_modules"),
    (dict(target_modules="(unclosed"), r"pattern '\(unclosed' is not a valid regular expression"),
    (dict(alpha_pattern={"o_proj[": 2}), "is not a valid regular expression"),
    (dict(modules_to_save=None), "neither LoRA nor in modules_to_save"),
])
def test_an_unsupported_or_malformed_adapter_is_refused(peft_round, changes, message):
    edit_adapter(peft_round, "clients/client-1", **changes)
    with pytest.raises(AdapterError, match=message):
        read_round(peft_round)


def test_a_missing_adapter_key_is_named(peft_round):
    path = peft_round / "global" / "adapter_config.json"
    data = json.loads(path.read_text())
    del data["lora_alpha"]
    path.write_text(json.dumps(data))
    with pytest.raises(AdapterError, match="global model.*missing required key 'lora_alpha'"):
        read_round(peft_round)


def test_a_rank_that_disagrees_with_the_config_is_refused(peft_round):
    edit_adapter(peft_round, "clients/client-0", rank_pattern={})
    with pytest.raises(AdapterError, match=r"down_proj.lora_A has rank 4 but adapter_config.json gives r=2"):
        read_round(peft_round)


def test_use_rslora_changes_the_scaling(peft_round):
    before = read_round(peft_round).clients[0].lora
    edit_adapter(peft_round, "clients/client-0", use_rslora=True)
    after = read_round(peft_round).clients[0].lora
    for module, factors in after.items():
        rank = factors.A.shape[0]
        assert factors.scaling == pytest.approx(before[module].scaling * rank / math.sqrt(rank))


def test_a_lora_factor_without_its_pair_is_refused(peft_round, load_base_tensors):
    from safetensors.torch import load_file

    path = peft_round / "clients" / "client-0" / "adapter_model.safetensors"
    tensors = {k: v for k, v in load_file(path).items() if not k.endswith("o_proj.lora_B.weight")}
    replace_weights(peft_round, "clients/client-0", tensors, name="adapter_model.safetensors")
    with pytest.raises(AdapterError, match=r"LoRA module 'model.layers.1.self_attn.o_proj' has no lora_B.weight"):
        read_round(peft_round)


@pytest.mark.parametrize(("key", "message"), [
    ("model.layers.1.self_attn.o_proj.lora_A.weight", "does not start with 'base_model.model.'"),
    ("base_model.model.model.layers.1.self_attn.o_proj.lora_magnitude_vector", "not a supported LoRA weight"),
    ("base_model.model.model.embed_tokens.lora_embedding_A", "not a supported LoRA weight"),
])
def test_an_unexpected_adapter_key_is_named(peft_round, key, message):
    from safetensors.torch import load_file

    path = peft_round / "clients" / "client-1" / "adapter_model.safetensors"
    tensors = {**load_file(path), key: torch.zeros(2, 64)}
    replace_weights(peft_round, "clients/client-1", tensors, name="adapter_model.safetensors")
    with pytest.raises(AdapterError, match=message):
        read_round(peft_round)


def test_lora_on_a_non_linear_module_is_refused(peft_round):
    from safetensors.torch import load_file

    path = peft_round / "clients" / "client-1" / "adapter_model.safetensors"
    tensors = {**load_file(path),
               "base_model.model.model.norm.lora_A.weight": torch.zeros(2, 64),
               "base_model.model.model.norm.lora_B.weight": torch.zeros(64, 2)}
    replace_weights(peft_round, "clients/client-1", tensors, name="adapter_model.safetensors")
    edit_adapter(peft_round, "clients/client-1", target_modules=None)
    with pytest.raises(WeightsError, match="LoRA target 'model.norm' is not a linear layer"):
        read_round(peft_round)


def test_a_base_folder_with_only_pickle_weights_is_refused(weights_round, tmp_path, tiny_model_dir):
    base = tmp_path / "pickled-base"
    base.mkdir()
    shutil.copy(tiny_model_dir("llama") / "config.json", base / "config.json")
    marker = tmp_path / "unpickled"
    (base / "pytorch_model.bin").write_bytes(pickle.dumps(_SideEffect(marker)))
    edit_manifest(weights_round, base_model=str(base))
    with pytest.raises(BaseModelError, match=r"holds only pickle weights \(pytorch_model.bin\)"):
        read_round(weights_round)
    assert not marker.exists()
