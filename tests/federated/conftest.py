import os

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    from attribution.tiny import save_tiny_model

    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny") / "llama", seed=0, layers=3, hidden=64)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core box threads oversubscribe (25x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
