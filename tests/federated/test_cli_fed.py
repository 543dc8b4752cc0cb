import pytest

from federated.cli import main
from federated.errors import SimulationConfigError
from federated.simulate import SimulationConfig
from federated.tail import LoraSpec, TrainConfig


@pytest.mark.parametrize("argv,message", [
    (["--protocol", "backdoor", "--clients", "3", "--malicious", "3"], "1 <= malicious < clients"),
    (["--domain", "law"], "unknown domain 'law'"),
    (["--train-blocks", "2", "--record-blocks", "3"], "record_blocks must be in 1..train_blocks"),
    (["--sample", "9", "--clients", "4"], "sample must be in 2..clients"),
    (["--lr", "0"], "learning rate must be > 0"),
    (["--model", "/no/such/model"], "unknown base model"),
])
def test_bad_input_exits_2_with_a_named_message(argv, message, tmp_path, capsys, tiny_llama_dir):
    if "--model" not in argv:
        argv = argv + ["--model", str(tiny_llama_dir)]
    code = main(["simulate", "--out", str(tmp_path / "o"), "--quiet", "--per-client", "2", "--cases", "1", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_configs_validate_in_post_init():
    with pytest.raises(SimulationConfigError, match="unknown protocol"):
        SimulationConfig(protocol="nope")
    with pytest.raises(SimulationConfigError, match="sentinel must not contain the trigger"):
        SimulationConfig(trigger="X", sentinel="aXb")
    with pytest.raises(SimulationConfigError, match="epochs and batch_size"):
        TrainConfig(epochs=0)
    with pytest.raises(SimulationConfigError, match="LoRA needs r >= 1"):
        LoraSpec(r=0)
