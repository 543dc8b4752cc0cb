"""`python -m attribution attribute`: the table, JSON, teacher forcing, and exit 2 on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from attribution import AttributionResult
from attribution.cli import main


@pytest.fixture(scope="module")
def round_dir(engine_round_dir):
    return engine_round_dir("llama", "slice")


def test_it_prints_a_per_token_table(round_dir, capsys):
    assert main(["attribute", str(round_dir), "--prompt", "Hello", "--max-new-tokens", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert len(rows) == 4
    assert "sequence shares:" in out and "predicted client: c" in out and "responsible set: c" in out


def test_it_prints_json_and_teacher_forces_a_response(round_dir, capsys):
    args = ["attribute", str(round_dir), "--prompt", "Hello", "--response", "abc", "--json", "--no-progress",
            "--aggregation", "zscore", "--target", "logprob", "--last-n-blocks", "2"]
    assert main(args) == 0
    result = AttributionResult.from_json(capsys.readouterr().out)
    assert result.mode == "teacher_forced" and "".join(result.response_tokens) == "abc"
    assert result.provenance.config["aggregation"] == "zscore"
    assert result.provenance.config["target"] == "logprob"
    assert len(result.provenance.tracked_modules) == 5


def test_it_runs_as_a_module_with_progress_on_stderr(round_dir):
    proc = subprocess.run([sys.executable, "-m", "attribution", "attribute", str(round_dir), "--prompt", "Hi",
                           "--max-new-tokens", "2", "--json", "--raw"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["response_ids"]) == 2
    assert "loading round" in proc.stderr


@pytest.mark.parametrize("extra,message", [
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "x", "--response", " "], "--response is empty"),
    (["--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--prompt", "x", "--last-n-blocks", "5"], "only 2 blocks"),
    (["--prompt", "x", "--last-n-blocks", "0"], "last_n_blocks must be an integer >= 1"),
    (["--prompt", "x", "--device", "cuda:0"], "CUDA is not available"),
    (["--prompt", "x", "--device", "nonsense"], "not a torch device"),
])
def test_it_exits_2_with_a_message_on_bad_options(round_dir, capsys, extra, message):
    assert main(["attribute", str(round_dir), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_it_exits_2_on_a_missing_or_unsafe_round(tmp_path, capsys, round_dir):
    assert main(["attribute", str(tmp_path / "absent"), "--prompt", "x", "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    copy = tmp_path / "round"
    shutil.copytree(round_dir, copy)
    (copy / "clients" / "c0" / "evil.pkl").write_bytes(b"not opened")
    assert main(["attribute", str(copy), "--prompt", "x", "--no-progress"]) == 2
    assert "pickle" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["attribute"],
    ["attribute", "somewhere"],
    ["attribute", "somewhere", "--prompt", "x", "--target", "prob"],
    ["attribute", "somewhere", "--prompt", "x", "--max-new-tokens", "many"],
])
def test_it_lets_argparse_refuse_malformed_command_lines(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err
