"""Client side of the platform's round upload: ``POST {url}/api/v1/rounds/upload``.

The round folder is packed as a ``.tar.gz`` (paths relative to the folder's
parent, so the archive holds ``round-0003/manifest.json`` ...) and sent as the
multipart field ``archive`` with ``Authorization: Bearer <token>``. Only the
standard library is used. Any non-2xx answer or connection failure raises
`UploadError` carrying the server's message.
"""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from federated.errors import UploadError

UPLOAD_PATH = "/api/v1/rounds/upload"


@dataclass(frozen=True)
class PlatformTarget:
    """Where to push rounds: the platform's base URL and an API token."""

    url: str
    token: str
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise UploadError(f"platform URL must start with http:// or https://, got {self.url!r}")
        if not self.token:
            raise UploadError("platform API token is empty; pass the token the platform issued")


def pack_round(round_dir: str | Path) -> bytes:
    """The round folder as .tar.gz bytes, rooted at the folder's own name."""
    root = Path(round_dir)
    if not (root / "manifest.json").is_file():
        raise UploadError(f"{root} is not a round folder (no manifest.json)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname=root.name)
    return buf.getvalue()


def multipart(field: str, filename: str, payload: bytes) -> tuple[bytes, str]:
    """Encode one file field as multipart/form-data; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/gzip\r\n\r\n").encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def push_round(round_dir: str | Path, target: PlatformTarget) -> dict:
    """Upload one round folder; returns the platform's JSON answer (or {} if it sent none)."""
    body, ctype = multipart("archive", f"{Path(round_dir).name}.tar.gz", pack_round(round_dir))
    req = urllib.request.Request(target.url.rstrip("/") + UPLOAD_PATH, data=body, method="POST",
                                 headers={"Authorization": f"Bearer {target.token}", "Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=target.timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise UploadError(f"platform refused round {Path(round_dir).name}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise UploadError(f"cannot reach the platform at {target.url}: {exc}") from exc
    return json.loads(text) if text.strip() else {}
