"""POST /api/v1/rounds/register: a round already in the artifact store is registered in place."""

from __future__ import annotations

import shutil

import pytest
from registry.models import Round

pytestmark = pytest.mark.django_db


def test_it_registers_a_round_already_in_the_store(api, federation, make_round, artifact_root):
    shutil.copytree(make_round(), artifact_root / "incoming" / "r0")
    response = api.post("/rounds/register", {"path": "incoming/r0"})
    assert response.status_code == 201, response.json()
    round_ = Round.objects.get(federation=federation)
    assert round_.artifact_path == "incoming/r0"
    assert "clients/bob/model.safetensors" in round_.files


@pytest.mark.parametrize("path", ["../etc", "/abs/path", "a/../../b"])
def test_it_refuses_paths_outside_the_store(api, federation, path):
    response = api.post("/rounds/register", {"path": path})
    assert response.status_code == 422
    assert response.json()["code"] == "unsafe_path"
    assert response.json()["field"] == "path"


def test_it_reports_a_missing_folder(api, federation):
    response = api.post("/rounds/register", {"path": "nowhere/r9"})
    assert response.status_code == 404
    assert response.json() == {"code": "unknown_path", "message": "the artifact store has no folder 'nowhere/r9'",
                               "field": "path"}
