"""Reading the CLI's inputs: contribution rows, evidence, harm policies and `protoken-round/1` folders.

Contributions come from a CSV or JSONL file (one row per generation or per
client; rows of a client are summed exactly) or from a SQL table aggregated
in Postgres as ``sum(share::numeric)``, which is exact and independent of
row order, so the same rows always give the same allocation (and the same
idempotency hash).

Round folders are read without the attribution engine: the manifest is
checked for the keys used here, pickles anywhere in the folder are refused,
every weights file must match its manifest SHA-256, and tensors are read with
`safetensors` (BF16, which numpy lacks, is widened to float32 from the raw
bytes) and streamed to `ledger.screening.round_statistics` in row blocks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from sqlalchemy import Numeric, column, func, select, table
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from ledger import canonical
from ledger.allocation import aggregate
from ledger.errors import InvalidInput
from ledger.screening import BLOCK_ELEMENTS, EvidenceRecord, HarmPolicy, RoundStatistics, round_statistics

ROUND_FORMAT = "protoken-round/1"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WEIGHT_FILES = {"weights": "model.safetensors", "peft": "adapter_model.safetensors"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


# --- contributions --------------------------------------------------------------------------------


def read_contributions(path: str | Path, *, share_column: str = "share", client_column: str = "client_id",
                       period_column: str | None = None, period: str | None = None) -> dict[str, Fraction]:
    """Sum a CSV/JSONL file's shares per client (optionally only rows whose period column equals `period`)."""
    rows = _rows(Path(path))
    picked = []
    for where, row in rows:
        if period_column is not None and str(_field(row, period_column, where)) != period:
            continue
        client = str(_field(row, client_column, where))
        picked.append((client, _decimal(_field(row, share_column, where), where)))
    if not picked:
        raise InvalidInput(f"{path}: no contribution rows" + (f" for period {period!r}" if period_column else ""))
    return aggregate(picked)


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                yield f"{path}:{line}", row
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        yield from _jsonl(path)
    else:
        raise InvalidInput(f"{path}: expected a .csv or .jsonl file")


def _jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{where}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise InvalidInput(f"{where}: expected a JSON object per line")
            yield where, row


def _field(row: dict, name: str, where: str) -> Any:
    if name not in row or row[name] in (None, ""):
        raise InvalidInput(f"{where}: missing column {name!r} (columns: {sorted(row)})")
    return row[name]


def _decimal(value: Any, where: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidInput(f"{where}: share {value!r} is not a number") from exc
    if not result.is_finite():
        raise InvalidInput(f"{where}: share {value!r} is not finite")
    return result


def contributions_from_table(session: Session, name: str, *, client_column: str = "client_id",
                             share_column: str = "share", period_column: str | None = None,
                             period: str | None = None) -> dict[str, Decimal]:
    """``SELECT client, sum(share::numeric) FROM <schema.table> [WHERE period = :p] GROUP BY client``."""
    schema, _, table_name = name.rpartition(".")
    for part in [table_name, client_column, share_column] + [p for p in (schema, period_column) if p]:
        if not _IDENTIFIER.match(part):
            raise InvalidInput(f"{part!r} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")
    source = table(table_name, column(client_column), column(share_column),
                   *([column(period_column)] if period_column else []), schema=schema or None)
    client, share = source.c[client_column], source.c[share_column]
    query = select(client, func.sum(share.cast(Numeric()))).group_by(client)
    if period_column:
        query = query.where(source.c[period_column] == period)
    try:
        with session.begin_nested():  # a missing table must not poison the caller's transaction
            rows = session.execute(query).all()
    except ProgrammingError as exc:
        raise InvalidInput(f"cannot read contributions from {name}: {str(exc.orig).splitlines()[0]}") from exc
    if not rows:
        raise InvalidInput(f"{name} has no contribution rows" + (f" for period {period!r}" if period_column else ""))
    return {str(c): Decimal(s) for c, s in rows}


# --- evidence ---------------------------------------------------------------------------------------


def read_evidence(path: str | Path) -> list[EvidenceRecord]:
    """One EvidenceRecord per JSONL line: generation_id, round, shares, [harmful, token_top_clients, response]."""
    records = []
    for where, row in _jsonl(Path(path)) if Path(path).is_file() else _missing(path):
        try:
            records.append(EvidenceRecord(
                generation_id=str(_field(row, "generation_id", where)),
                round_id=int(_field(row, "round", where) if "round" in row else _field(row, "round_id", where)),
                shares={str(c): float(s) for c, s in _field(row, "shares", where).items()},
                harmful=row.get("harmful", False), token_top_clients=tuple(row.get("token_top_clients", ())),
                response=row.get("response")))
        except (InvalidInput, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"{where}: {exc}") from exc
    return records


def _missing(path) -> Iterator:
    raise InvalidInput(f"{path}: no such file")
    yield  # pragma: no cover - makes this a generator


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{what} file {path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} file {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def read_policy(path: str | Path) -> HarmPolicy:
    data = read_json(path, "harm policy")
    if not isinstance(data, dict):
        raise InvalidInput(f"harm policy file {path}: expected an object with patterns/keywords")
    return HarmPolicy.from_dict(data)


def read_baseline(path: str | Path) -> dict[str, float]:
    data = read_json(path, "baseline")
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise InvalidInput(f"baseline file {path}: expected an object {{client_id: share}}")
    return {canonical.client_id(c): float(v) for c, v in data.items()}


# --- round folders --------------------------------------------------------------------------------


class RoundFolder:
    """The parts of a `protoken-round/1` folder the update screen needs, checked on open."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = read_json(self.root / "manifest.json", "round manifest")
        self.manifest = manifest if isinstance(manifest, dict) else {}
        self.round = self._required_int("round")
        kind = self._required("kind")
        if self._required("format") != ROUND_FORMAT or kind not in WEIGHT_FILES:
            raise InvalidInput(f"{self.root}: not a {ROUND_FORMAT} folder of kind weights or peft")
        self.weights_name = WEIGHT_FILES[kind]
        _refuse_pickles(self.root)
        self.global_file = self._weights_path(self._required("global"), "global")
        self.clients = {canonical.client_id(c.get("id")): self._weights_path(c, c.get("id"))
                        for c in self._client_entries()}

    def _required(self, key: str) -> Any:
        if key not in self.manifest:
            raise InvalidInput(f"{self.root}/manifest.json: missing required key {key!r}")
        return self.manifest[key]

    def _required_int(self, key: str) -> int:
        value = self._required(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"{self.root}/manifest.json: {key!r} must be an integer >= 0")
        return value

    def _client_entries(self) -> list[dict]:
        clients = self._required("clients")
        if not isinstance(clients, list) or not clients or not all(isinstance(c, dict) for c in clients):
            raise InvalidInput(f"{self.root}/manifest.json: 'clients' must be a non-empty list of objects")
        return clients

    def _weights_path(self, entry: Any, who: Any) -> Path:
        if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
            raise InvalidInput(f"{self.root}/manifest.json: {who} needs 'path' and 'sha256'")
        relative = Path(str(entry["path"]))
        if relative.is_absolute() or ".." in relative.parts:
            raise InvalidInput(f"{self.root}/manifest.json: path {entry['path']!r} of {who} must be relative, "
                               "without '..'")
        path = self.root / relative / self.weights_name
        if not path.is_file():
            raise InvalidInput(f"{self.root}: {who} has no {relative / self.weights_name}")
        if _sha256_file(path) != str(entry["sha256"]).lower():
            raise InvalidInput(f"{path}: SHA-256 does not match the manifest; refusing a modified file")
        return path


def _refuse_pickles(root: Path) -> None:
    for path in root.rglob("*"):
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise InvalidInput(f"{path}: pickle files are refused (only safetensors are read)")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TensorFile:
    """Row slices of the tensors of one safetensors file, as float64."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            self.header = json.loads(handle.read(header_size))
        self.data_start = 8 + header_size
        self.names = {n for n in self.header if n != "__metadata__"}
        self._handle = safe_open(str(path), framework="numpy")

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the tensor flattened to 2-D (rows, -1)."""
        info = self.header[name]
        if info["dtype"] == "BF16":
            return self._bf16_rows(info, start, stop)
        if info["shape"]:
            data = self._handle.get_slice(name)[start:stop]
        else:
            data = self._handle.get_tensor(name).reshape(1)
        return np.asarray(data, dtype=np.float64).reshape(stop - start, -1)

    def _bf16_rows(self, info: dict, start: int, stop: int) -> np.ndarray:
        shape = info["shape"] or [1]
        row = int(np.prod(shape[1:], dtype=np.int64))
        begin = self.data_start + info["data_offsets"][0] + 2 * start * row
        raw = np.fromfile(self.path, dtype="<u2", count=(stop - start) * row, offset=begin)
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64).reshape(stop - start, row)


def _common_tensors(files: Sequence[TensorFile], modules: Sequence[str] | None, where: Path) -> list[str]:
    names = set.intersection(*(f.names for f in files))
    if modules:
        names = {n for n in names if any(m in n for m in modules)}
    if not names:
        raise InvalidInput(f"{where}: the clients share no tensors" + (f" matching {list(modules)}" if modules else ""))
    for name in names:
        shapes = {f.shape(name) for f in files}
        if len(shapes) > 1:
            raise InvalidInput(f"{where}: tensor {name} has different shapes {sorted(shapes)} across clients")
    return sorted(names)


def folder_statistics(folder: RoundFolder, reference: Path | None = None,
                      modules: Sequence[str] | None = None) -> RoundStatistics:
    """Per-client distances of one round's updates (client minus `reference`, default the round's global)."""
    client_ids = tuple(sorted(folder.clients))
    files = [TensorFile(folder.clients[c]) for c in client_ids]
    ref = TensorFile(reference or folder.global_file)
    names = _common_tensors(files + [ref], modules, folder.root)
    return round_statistics(folder.round, client_ids, _blocks(files, ref, names))


def _blocks(files: list[TensorFile], ref: TensorFile, names: list[str]) -> Iterator[np.ndarray]:
    for name in names:
        shape = files[0].shape(name) or (1,)
        row = int(np.prod(shape[1:], dtype=np.int64)) or 1
        step = max(1, BLOCK_ELEMENTS // row)
        for start in range(0, shape[0], step):
            stop = min(shape[0], start + step)
            centre = ref.rows(name, start, stop).reshape(-1)
            block = np.stack([f.rows(name, start, stop).reshape(-1) for f in files])
            if not np.all(np.isfinite(block)):
                raise InvalidInput(f"tensor {name} has NaN or infinite values in some client's weights")
            yield block - centre  # (K, n)


def rounds_statistics(folders: Sequence[str | Path], modules: Sequence[str] | None = None,
                      progress=None) -> list[RoundStatistics]:
    """Statistics of several round folders; round r uses round r-1's global model as reference if given."""
    opened = sorted((RoundFolder(f) for f in folders), key=lambda f: f.round)
    by_round = {f.round: f for f in opened}
    if len(by_round) != len(opened):
        raise InvalidInput("two round folders have the same round number")
    result = []
    for folder in progress(opened) if progress else opened:
        previous = by_round.get(folder.round - 1)
        result.append(folder_statistics(folder, previous.global_file if previous else None, modules))
    return result
