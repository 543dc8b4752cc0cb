"""The `attribute` subcommand of `python -m attribution` (full version in progress)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `attribute` subparser; its `func` runs the command."""
    parser = subparsers.add_parser("attribute", help="attribute a response to the clients of a round")
    parser.add_argument("round_dir")
    parser.set_defaults(func=lambda args: 2)
