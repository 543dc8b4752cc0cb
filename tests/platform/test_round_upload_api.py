"""POST /api/v1/rounds/upload: a valid round is stored and recorded; every bad input is refused and changes nothing."""

from __future__ import annotations

import json

import pytest
from conftest import read_manifest, tar_gz, zip_bytes
from django.core.files.storage import storages
from platform_factories import FederationFactory
from registry.models import Client, ClientUpdate, Round

pytestmark = pytest.mark.django_db


def _stored_file_count(root) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def test_it_registers_an_uploaded_tar_gz(api, federation, make_round):
    folder = make_round()
    response = api.upload("/rounds/upload", tar_gz(folder))
    assert response.status_code == 201, response.json()
    body = response.json()
    manifest = read_manifest(folder)
    assert body["number"] == 0 and body["kind"] == "weights"
    assert body["global_sha256"] == manifest["global"]["sha256"]
    assert {c["client_id"]: c["num_examples"] for c in body["clients"]} == {"alice": 10, "bob": 20, "carol": 30}
    round_ = Round.objects.get(federation=federation, number=0)
    assert set(round_.files) >= {"manifest.json", "global/model.safetensors", "clients/alice/model.safetensors"}
    storage = storages["artifacts"]
    for name in round_.files:
        assert storage.open(f"{round_.artifact_path}/{name}").read() == (folder / name).read_bytes()
    assert round_.size_bytes == sum((folder / n).stat().st_size for n in round_.files)


def test_it_accepts_a_zip_and_a_retry_of_the_same_round(api, federation, make_round):
    folder = make_round()
    assert api.upload("/rounds/upload", zip_bytes(folder), name="r.zip").status_code == 201
    again = api.upload("/rounds/upload", tar_gz(folder))
    assert again.status_code == 200
    assert Round.objects.filter(federation=federation).count() == 1
    assert ClientUpdate.objects.count() == 3


def test_it_refuses_a_different_round_under_a_taken_number(api, federation, make_round):
    assert api.upload("/rounds/upload", tar_gz(make_round(seed=0))).status_code == 201
    response = api.upload("/rounds/upload", tar_gz(make_round(seed=1)))
    assert response.status_code == 409
    assert response.json()["code"] == "round_exists"


def test_it_refuses_a_malformed_archive(api, federation):
    response = api.upload("/rounds/upload", b"this is not an archive")
    assert response.status_code == 400
    assert response.json() == {
        "code": "malformed_archive",
        "message": "the upload is neither a .tar.gz nor a .zip archive",
        "field": "archive",
    }
    assert Round.objects.count() == 0


def test_it_refuses_a_wrong_hash(api, federation, make_round):
    folder = make_round()
    manifest = read_manifest(folder)
    manifest["clients"][1]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    response = api.upload("/rounds/upload", tar_gz(folder))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "hash_mismatch"
    assert "bob" in body["message"] and "sha256" in body["message"]
    assert Round.objects.count() == 0


def test_it_refuses_an_unknown_client_and_stores_nothing(api, federation, make_round, artifact_root):
    before = _stored_file_count(artifact_root)
    response = api.upload("/rounds/upload", tar_gz(make_round(clients=("alice", "mallory"))))
    assert response.status_code == 422
    assert response.json() == {
        "code": "unknown_client",
        "message": "the round names client(s) not registered in 'fed-a': mallory; "
        "register them first (POST /api/v1/clients)",
        "field": "clients",
    }
    assert Round.objects.count() == 0
    assert _stored_file_count(artifact_root) == before


def test_it_registers_unknown_clients_when_the_federation_allows_it(make_api, issue_token, make_round, db):
    fed = FederationFactory(slug="open-fed", auto_register_clients=True)
    response = make_api(issue_token(fed)).upload("/rounds/upload", tar_gz(make_round(federation="open-fed")))
    assert response.status_code == 201
    assert sorted(Client.objects.filter(federation=fed).values_list("client_id", flat=True)) == ["alice", "bob", "carol"]


def test_it_refuses_a_pickle_file(api, federation, make_round):
    folder = make_round()
    (folder / "clients" / "alice" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    response = api.upload("/rounds/upload", tar_gz(folder))
    assert response.status_code == 422
    assert response.json()["code"] == "pickle_refused"
    assert "pytorch_model.bin" in response.json()["message"]
    assert Round.objects.count() == 0


def test_it_refuses_an_oversized_upload(api, federation, make_round, settings):
    settings.MAX_UPLOAD_BYTES = 2048
    response = api.upload("/rounds/upload", tar_gz(make_round()))
    assert response.status_code == 413
    assert response.json() == {
        "code": "upload_too_large",
        "message": "the upload exceeds the limit of 2048 bytes (MAX_UPLOAD_BYTES)",
        "field": "archive",
    }
    assert Round.objects.count() == 0


def test_it_refuses_a_round_of_another_federation(api, federation, make_round):
    response = api.upload("/rounds/upload", tar_gz(make_round(federation="fed-b")))
    assert response.status_code == 422
    assert response.json()["code"] == "federation_mismatch"


def test_it_requires_the_ingest_scope(make_api, issue_token, federation, make_round):
    response = make_api(issue_token(federation, ["read", "generate"])).upload("/rounds/upload", tar_gz(make_round()))
    assert response.status_code == 403
    assert response.json() == {
        "code": "missing_scope",
        "message": "this token lacks the 'ingest' scope on federation 'fed-a'",
        "field": None,
    }


@pytest.mark.parametrize("secret", [None, "ptk_not-a-real-token"])
def test_it_requires_a_valid_token(make_api, federation, make_round, secret):
    response = make_api(secret).upload("/rounds/upload", tar_gz(make_round()))
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_it_requires_the_archive_field(api, federation):
    response = api.http.post("/api/v1/rounds/upload", {}, headers=api.headers)
    assert response.status_code == 422
    assert response.json()["field"] == "archive"


def test_it_lists_only_the_callers_rounds(api, federation, make_round, make_api, issue_token):
    assert api.upload("/rounds/upload", tar_gz(make_round())).status_code == 201
    other = FederationFactory(slug="fed-b")
    assert make_api(issue_token(other)).get("/rounds").json() == []
    assert [r["number"] for r in api.get("/rounds").json()] == [0]
    assert make_api(issue_token(other)).get("/rounds/0").json()["code"] == "unknown_round"


def test_it_leaves_the_upload_folder_clean(api, federation, make_round, tmp_path, settings):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    assert api.upload("/rounds/upload", tar_gz(make_round())).status_code == 201
    assert list((tmp_path / "uploads").iterdir()) == []
