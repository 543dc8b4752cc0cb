import os

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    from attribution.tiny import save_tiny_model

    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny") / "llama", seed=0, layers=3, hidden=64)
