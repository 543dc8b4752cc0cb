"""The pipeline demo, end to end through the public HTTP API of a running server.

`run_demo` registers a federation and a token (directly, as an operator
would with the management commands), uploads round folders as `.tar.gz`
through `POST /api/v1/rounds/upload`, submits prompts through
`POST /api/v1/generations/batch`, waits until a real worker has finished every
one (polling `GET /api/v1/generations/{id}`), and reads the summary back
from the database with the selectors. Only the standard library speaks HTTP,
and archives are streamed from a temporary file, never held in memory.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import PlatformError
from registry.models import Federation
from registry.services import federation_create, token_issue

from .selectors import federation_share_summary, generation_status_counts

CHUNK = 1024 * 1024


class DemoError(RuntimeError):
    """The demo could not finish: the server refused a request or the worker did not finish in time."""


@dataclass
class DemoSummary:
    federation: str
    rounds: list[int]
    generation_ids: list[int]
    status_counts: dict[str, int]
    shares: list[dict]  # federation_share_summary rows
    predictions: list[dict] = field(default_factory=list)  # per generation: id, status, predicted client

    def table(self) -> str:
        lines = [f"federation {self.federation}: rounds {self.rounds}, generations {self.status_counts}"]
        lines.append(f"{'client':<20} {'generations':>11} {'mean share':>10} {'top-1':>6} {'responsible':>11}")
        for r in self.shares:
            lines.append(
                f"{r['client_id']:<20} {r['generations']:>11} {r['mean_share']:>10.3f} {r['top1']:>6} {r['responsible']:>11}"
            )
        return "\n".join(lines)


def run_demo(
    *, base_url: str, federation: str, round_dirs: list[Path], prompts: list[dict], timeout_s: float = 900
) -> DemoSummary:
    """Rounds and prompts in through the API at `base_url`, summary out of the database.

    `prompts` are items of `POST /generations/batch` (``{"prompt": ..., "response": ...}``).
    """
    fed = _federation(federation)
    secret = token_issue(federation=fed, name="demo", scopes=["ingest", "generate", "read"])[1]
    client = ApiClient(base_url, secret)
    rounds = [client.upload_round(Path(d))["number"] for d in round_dirs]
    accepted = client.post("/generations/batch", {"items": prompts})["generations"]
    ids = [g["id"] for g in accepted]
    finished = client.wait_for(ids, timeout_s=timeout_s)
    return DemoSummary(
        federation=fed.slug,
        rounds=rounds,
        generation_ids=ids,
        status_counts=generation_status_counts(federation=fed),
        shares=federation_share_summary(federation=fed),
        predictions=[_prediction(g) for g in finished],
    )


def _federation(slug: str) -> Federation:
    existing = Federation.objects.filter(slug=slug).first()
    if existing is not None:
        return existing
    try:
        return federation_create(slug=slug, name=slug, auto_register_clients=True)
    except PlatformError as exc:
        raise DemoError(f"{exc.code}: {exc.message}") from None


def _prediction(generation: dict) -> dict:
    attribution = generation.get("attribution") or {}
    return {
        "id": generation["id"],
        "status": generation["status"],
        "predicted_client": attribution.get("predicted_client"),
        "failure_reason": generation.get("failure_reason", ""),
    }


class ApiClient:
    """A minimal JSON + multipart client for the v1 API (standard library only)."""

    def __init__(self, base_url: str, secret: str) -> None:
        self.base = base_url.rstrip("/") + "/api/v1"
        self.headers = {"Authorization": f"Bearer {secret}"}

    def get(self, path: str) -> dict:
        return self._send(urllib.request.Request(self.base + path, headers=self.headers))

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {**self.headers, "Content-Type": "application/json"}
        return self._send(urllib.request.Request(self.base + path, data=data, headers=headers, method="POST"))

    def upload_round(self, folder: Path) -> dict:
        with tempfile.TemporaryDirectory(prefix="demo-upload-") as tmp:
            archive = Path(tmp) / "round.tar.gz"
            with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
                tar.add(folder, arcname=folder.name)
            return self._send(self._multipart_request("/rounds/upload", archive))

    def wait_for(self, ids: list[int], *, timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        pending, done = list(ids), {}
        while pending:
            for gid in list(pending):
                body = self.get(f"/generations/{gid}")
                if body["status"] in ("done", "failed"):
                    done[gid] = body
                    pending.remove(gid)
            if pending and time.monotonic() > deadline:
                raise DemoError(f"{len(pending)} generation(s) unfinished after {timeout_s:.0f}s: {pending[:10]}")
            if pending:
                time.sleep(0.5)
        return [done[i] for i in ids]

    def _multipart_request(self, path: str, archive: Path) -> urllib.request.Request:
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="archive"; filename="{archive.name}"\r\n'
            "Content-Type: application/gzip\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = len(head) + archive.stat().st_size + len(tail)
        headers = {
            **self.headers,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length),
        }
        return urllib.request.Request(
            self.base + path, data=_stream(head, archive, tail), headers=headers, method="POST"
        )

    def _send(self, request: urllib.request.Request) -> dict:
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise DemoError(f"{request.get_method()} {request.full_url}: {exc.code} {exc.read()[:500]!r}") from None
        except urllib.error.URLError as exc:
            raise DemoError(f"{request.full_url}: server not reachable ({exc.reason})") from None


def _stream(head: bytes, archive: Path, tail: bytes) -> Iterator[bytes]:
    yield head
    with archive.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
    yield tail
