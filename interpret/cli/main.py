"""The command line for headless use (``python -m interpret``): one parser over the commands of this package.

    python -m interpret explain IMAGE [IMAGE …] --model NAME --method METHOD [--target CLASS] \\
        [--param k=v …] --out FILE [--out FILE …]
    python -m interpret list-models
    python -m interpret list-methods
    python -m interpret top-patches {scan,merge} …
    python -m interpret dissect --model classroom_spurious [--layers …] [--engine ray] [--json [FILE]]
    python -m interpret ablate (--units LAYER:CHANNELS … | --concept C | --story) …
    python -m interpret synthesize --model NAME --objective "logit(espresso) - logit(cup)" [--preset quick] …

Each command lives in its own module (``explain``, ``listing``, ``top_patches``) and registers itself here.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

# lime draws a tqdm bar on stderr for every explanation; tqdm reads this when first imported (by captum/lime),
# so it is set before the commands import the methods.
os.environ.setdefault("TQDM_DISABLE", "1")

from interpret.cli import dissect, explain, listing, top_patches  # noqa: E402 - after TQDM_DISABLE
from interpret.cli import ablate, synthesize  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m interpret`` parser with every command; each sets ``func``, which runs it."""
    parser = argparse.ArgumentParser(prog="python -m interpret", description="CNN Lens from the command line.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    explain.add_parser(sub)
    listing.add_parsers(sub)
    top_patches.add_parser(sub)
    dissect.add_parser(sub)
    ablate.add_parser(sub)
    synthesize.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the command; its exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)
