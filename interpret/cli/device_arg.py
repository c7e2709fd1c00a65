"""The ``--device`` option every command that loads a model takes (default: ``resolve_device``'s choice)."""
from __future__ import annotations

import argparse

__all__ = ["add_device_argument", "device_of_args"]


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="cpu, cuda, cuda:N, mps or auto (default: $CNN_LENS_DEVICE, else CUDA, else MPS, "
                             "else CPU)")


def device_of_args(args: argparse.Namespace) -> str | None:
    """The device the command was given (None: the default choice)."""
    return getattr(args, "device", None)
