"""Fixtures for the platform tests: artifact storage in a temp folder, tiny real rounds, tokens, an API client."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from django.test import Client as HttpClient
from platform_factories import ClientFactory, FederationFactory

CLIENTS = ("alice", "bob", "carol")


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, artifact_root, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(artifact_root)},
        },
    }
    settings.ARTIFACT_CACHE_DIR = tmp_path / "artifact-cache"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from attribution.tiny import save_tiny_model

    return save_tiny_model("llama", tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


def build_round(out: Path, *, base: Path, federation: str, number: int = 0, clients=CLIENTS, seed: int = 0) -> Path:
    """A real `protoken-round/1` folder: each client perturbs the tracked slice, the global is their FedAvg."""
    from safetensors.torch import load_file

    from attribution.snapshot import slice_state_dict, tracked_module_names, write_round
    from attribution.snapshot_types import ClientUpdate

    base_slice = slice_state_dict(load_file(base / "model.safetensors"), tracked_module_names(base))
    gen = torch.Generator().manual_seed(seed)
    updates = [
        ClientUpdate(
            cid,
            num_examples=10 * (i + 1),
            sha256="",
            tensors={k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in base_slice.items()},
        )
        for i, cid in enumerate(clients)
    ]
    total = sum(u.num_examples for u in updates)
    glob = {k: sum(u.num_examples / total * u.tensors[k] for u in updates) for k in base_slice}
    return write_round(
        out, federation=federation, round=number, base_model=str(base), kind="weights", global_update=glob, clients=updates
    )


@pytest.fixture
def make_round(tmp_path, tiny_base):
    def make(federation: str = "fed-a", number: int = 0, clients=CLIENTS, seed: int = 0) -> Path:
        out = tmp_path / f"{federation}-round-{number}-{seed}-{'-'.join(clients)}"
        if out.exists():  # the same arguments build the same round
            return out
        return build_round(out, base=tiny_base, federation=federation, number=number, clients=clients, seed=seed)

    return make


def tar_gz(folder: Path, *, arcname: str = "round") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


def zip_bytes(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture
def fresh_round_cache():
    """The worker's round cache emptied before and after the test (each test registers its own rounds)."""
    from audits import engine

    engine.round_cache().clear()
    yield
    engine.round_cache().clear()


@pytest.fixture
def federation(db):
    fed = FederationFactory(slug="fed-a", name="Federation A")
    for cid in CLIENTS:
        ClientFactory(federation=fed, client_id=cid)
    return fed


@pytest.fixture
def issue_token():
    from registry.services import token_issue

    def issue(federation, scopes=("ingest", "generate", "read")) -> str:
        return token_issue(federation=federation, name="test", scopes=list(scopes))[1]

    return issue


class Api:
    """The Django test client, speaking JSON with a Bearer token."""

    def __init__(self, secret: str | None = None) -> None:
        self.http = HttpClient()
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}

    def get(self, path: str, **params):
        return self.http.get(f"/api/v1{path}", params, headers=self.headers)

    def post(self, path: str, body: dict | None = None):
        return self.http.post(f"/api/v1{path}", json.dumps(body or {}), "application/json", headers=self.headers)

    def patch(self, path: str, body: dict):
        return self.http.patch(f"/api/v1{path}", json.dumps(body), "application/json", headers=self.headers)

    def upload(self, path: str, data: bytes, name: str = "round.tar.gz"):
        file = io.BytesIO(data)
        file.name = name
        return self.http.post(f"/api/v1{path}", {"archive": file}, headers=self.headers)


@pytest.fixture
def api(federation, issue_token) -> Api:
    return Api(issue_token(federation))


@pytest.fixture
def make_api():
    return Api


CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker(celery_test_db, artifact_root, tmp_path, transactional_db):
    """A real `celery worker` process on the test database (broker included), killed at teardown."""
    env = {
        **os.environ,
        "DATABASE_URL": celery_test_db,
        "PYTHONPATH": f"{CHECKOUT}{os.pathsep}{CHECKOUT / 'platform'}",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ARTIFACT_ROOT": str(artifact_root),
        "ARTIFACT_CACHE_DIR": str(tmp_path / "worker-cache"),
        "CELERY_BROKER_URL": "",
        "CELERY_RESULT_BACKEND": "",
    }
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "attribution,default", "--pool", "solo",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info"],
        cwd=CHECKOUT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


