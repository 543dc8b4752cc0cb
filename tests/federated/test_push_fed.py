"""Round upload to the platform API, against a real HTTP server started here."""

import io
import json
import tarfile
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from federated.errors import UploadError
from federated.push import UPLOAD_PATH, PlatformTarget, push_round


class Handler(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Handler.received.append((self.path, dict(self.headers), body))
        if self.headers.get("Authorization") != "Bearer good-token":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"detail": "invalid API token"}')
            return
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"round": 3, "status": "registered"}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def round_dir(tmp_path):
    root = tmp_path / "round-0003"
    (root / "global").mkdir(parents=True)
    (root / "manifest.json").write_text('{"format": "protoken-round/1"}')
    (root / "global" / "model.safetensors").write_bytes(b"\x00" * 16)
    return root


def _archive_members(headers, body):
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
    part = next(p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "archive")
    with tarfile.open(fileobj=io.BytesIO(part.get_payload(decode=True)), mode="r:gz") as tar:
        return sorted(tar.getnames())


def test_it_posts_the_round_as_a_tar_gz_with_the_bearer_token(server, round_dir):
    answer = push_round(round_dir, PlatformTarget(server, "good-token"))
    assert answer == {"round": 3, "status": "registered"}
    path, headers, body = Handler.received[0]
    assert path == UPLOAD_PATH and headers["Authorization"] == "Bearer good-token"
    assert _archive_members(headers, body) == ["round-0003", "round-0003/global",
                                               "round-0003/global/model.safetensors", "round-0003/manifest.json"]


def test_a_refusal_raises_upload_error_with_the_server_message(server, round_dir):
    with pytest.raises(UploadError, match="HTTP 401.*invalid API token"):
        push_round(round_dir, PlatformTarget(server, "bad-token"))


def test_bad_targets_and_folders_are_named(tmp_path):
    with pytest.raises(UploadError, match="must start with http"):
        PlatformTarget("ftp://x", "t")
    with pytest.raises(UploadError, match="token is empty"):
        PlatformTarget("http://x", "")
    with pytest.raises(UploadError, match="not a round folder"):
        push_round(tmp_path, PlatformTarget("http://127.0.0.1:9", "t"))
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(UploadError, match="cannot reach the platform"):
        push_round(tmp_path, PlatformTarget("http://127.0.0.1:9", "t", timeout_s=2))
