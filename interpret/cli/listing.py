"""``python -m interpret list-models`` and ``list-methods``: what the other commands can be given."""
from __future__ import annotations

import argparse

from models.registry import list_models

from interpret.attribution.registry import METHODS


def run_list_models(args: argparse.Namespace) -> int:
    """Print every model key, whether it can be loaded here, its name and status."""
    for e in list_models():
        print(f"{e.key:24s} {'yes' if e.available else 'no ':3s} {e.name} — {e.status}")
    return 0


def run_list_methods(args: argparse.Namespace) -> int:
    """Print every attribution method: key, signed or not, label and parameters with their defaults."""
    for name, spec in METHODS.items():
        params = ", ".join(f"{p.name}={p.default!r}" for p in spec.params) or "no parameters"
        print(f"{name:22s} {'signed  ' if spec.signed else 'unsigned'} {spec.label} ({params})")
    return 0


def add_parsers(subparsers) -> None:
    """Register ``list-models`` and ``list-methods`` on an argparse subparsers object."""
    subparsers.add_parser("list-models", help="models and whether they can be loaded here").set_defaults(
        func=run_list_models)
    subparsers.add_parser("list-methods", help="attribution methods and their parameters").set_defaults(
        func=run_list_methods)
