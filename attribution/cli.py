"""Command line: `python -m attribution {inspect,convert-model,attribute,lineage} ...`.

Subcommands are argparse subparsers whose `func(args) -> int` does the work.
`attribute` and `lineage` live in `attribution.cli_attribute` (the engine's side) and are
registered here. Every `AttributionError` becomes exit code 2 with a one-line
``error: ...`` on stderr; argparse's own usage errors also exit 2. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from attribution import cli_attribute
from attribution.errors import AttributionError
from attribution.shipped import SHIPPED, BaseModelSpec, base_model_spec, ensure_shipped
from attribution.snapshot import changed_tracked_modules, read_round, tracked_module_names
from attribution.snapshot_types import FORMAT, ClientUpdate, RoundSnapshot

SHA_PREFIX = 12


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attribution",
                                     description="ProToken attribution for federated LLM rounds")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect = sub.add_parser("inspect", help="verify a round folder and describe its clients")
    inspect.add_argument("round_dir", help=f"a {FORMAT} folder (holds manifest.json)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.add_argument("--no-verify", action="store_true", help="skip the sha256 checks")
    inspect.add_argument("--last-n-blocks", type=int, default=1, metavar="N",
                         help="tracked modules: o_proj and mlp of the last N blocks, plus lm_head (default 1)")
    inspect.set_defaults(func=cmd_inspect)
    convert = sub.add_parser("convert-model", help="convert a shipped model once and print its cache folder")
    convert.add_argument("name", help=f"one of: {', '.join(SHIPPED)}")
    convert.set_defaults(func=cmd_convert_model)
    cli_attribute.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except AttributionError as exc:
        return fail(exc)


def fail(exc: AttributionError) -> int:
    """Report a user error on one line; exit code 2 like argparse's usage errors."""
    message = " ".join(str(exc).split())
    print(f"error: {message}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------- convert-model


def cmd_convert_model(args: argparse.Namespace) -> int:
    try:
        print(ensure_shipped(args.name, progress=True))
    except AttributionError as exc:
        return fail(exc)
    return 0


# ---------------------------------------------------------------- inspect


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        snapshot = read_round(args.round_dir, verify=not args.no_verify)
        modules = tracked_module_names(snapshot.base_model_dir, last_n_blocks=args.last_n_blocks)
        report = inspect_report(snapshot, modules, verified=not args.no_verify)
    except AttributionError as exc:
        return fail(exc)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def inspect_report(snapshot: RoundSnapshot, modules: list[str], *, verified: bool = True) -> dict:
    """A JSON-able description of a verified round: manifest fields, then one row per model."""
    m = snapshot.manifest
    spec = base_model_spec(snapshot.base_model_dir)
    return {
        "root": str(snapshot.root), "format": FORMAT, "sha256_verified": verified,
        "federation": m.federation, "round": m.round, "kind": m.kind, "aggregation": m.aggregation,
        "base_model": m.base_model, "base_model_dir": str(snapshot.base_model_dir),
        "tracked_modules": modules,
        "global": _update_row(snapshot, snapshot.global_update, modules, spec),
        "clients": [_update_row(snapshot, c, modules, spec) for c in snapshot.clients],
    }


def _update_row(snapshot: RoundSnapshot, update: ClientUpdate, modules: list[str], spec: BaseModelSpec) -> dict:
    return {
        "id": update.client_id, "num_examples": update.num_examples, "sha256": update.sha256,
        "bytes": update.weights_file.stat().st_size if update.weights_file else None,
        "tensors": len(update.tensors), "lora_modules": len(update.lora),
        "changed_modules": changed_tracked_modules(snapshot, update, modules, spec=spec),
    }


def format_report(report: dict) -> str:
    verified = "sha256 verified" if report["sha256_verified"] else "sha256 NOT verified"
    head = [
        f"round        {report['root']} ({report['format']}, {verified})",
        f"federation   {report['federation']}  round {report['round']}",
        f"kind         {report['kind']}",
        f"base model   {report['base_model']} -> {report['base_model_dir']}",
        f"aggregation  {report['aggregation']}",
        f"tracked      {', '.join(report['tracked_modules'])}",
        "",
    ]
    rows = [_table_row(r, report["tracked_modules"]) for r in [report["global"], *report["clients"]]]
    return "\n".join(head + _table(["model", "examples", "sha256", "bytes", "changes"], rows))


def _table_row(row: dict, modules: list[str]) -> list[str]:
    changed = row["changed_modules"]
    changes = "all tracked" if changed and changed == modules else ", ".join(changed) or "none"
    return [row["id"], str(row["num_examples"]), row["sha256"][:SHA_PREFIX], str(row["bytes"]), changes]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
