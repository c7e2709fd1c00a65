"""Shard plans and the resumable parts folder.

A plan cuts a listed collection into contiguous runs of whole batches (``ImageCollection.shard``), so each
image is computed in the batch it would be in one run. The parts folder holds ``manifest.json`` (a digest of
the run's arguments and the collection's listing) and one ``part-NNNNN.npz`` per finished shard, each written
to a temporary name and renamed into place (atomic): a stopped run leaves only whole parts, and a rerun with
the same arguments finds and reuses them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from interpret.core.errors import InputError
from models.collections import ImageCollection

DEFAULT_SHARD_BATCHES = 8


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of a plan: its items (global index, name), whole batches of the run's batch size."""

    index: int
    items: tuple[tuple[int, str], ...]

    def __len__(self) -> int:
        return len(self.items)


def plan(col: ImageCollection, batch_size: int, n_shards: int | None = None,
         shard_batches: int = DEFAULT_SHARD_BATCHES) -> list[Shard]:
    """The shards of ``col``: ``n_shards`` of them if given (at most one per batch), else runs of about
    ``shard_batches`` batches. Empty shards are left out."""
    if batch_size < 1:
        raise InputError("the batch size must be at least 1")
    n_batches = -(-len(col) // batch_size)
    if n_batches == 0:
        return []
    n = n_shards if n_shards is not None else -(-n_batches // max(shard_batches, 1))
    if n < 1:
        raise InputError("the number of shards must be at least 1")
    n = min(n, n_batches)
    out = [Shard(i, tuple(col.shard(i, n, batch_size).items)) for i in range(n)]
    return [s for s in out if s.items]


def run_digest(args: dict[str, Any], listing: str, shards: Sequence[Shard]) -> str:
    """What identifies a run: its arguments, the collection's fingerprint and the shard boundaries."""
    h = hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode())
    h.update(listing.encode())
    h.update(json.dumps([(s.index, s.items[0][0], len(s)) for s in shards]).encode())
    return h.hexdigest()[:24]


class PartsFolder:
    """The resumable parts of one run in ``folder``: a manifest naming the run, one file per finished shard."""

    def __init__(self, folder: str | os.PathLike, digest: str, args: dict[str, Any], n_shards: int) -> None:
        self.folder = Path(folder)
        self.digest = digest
        self.folder.mkdir(parents=True, exist_ok=True)
        man = self.folder / "manifest.json"
        if man.exists():
            try:
                old = json.loads(man.read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("digest") != digest:
                raise InputError(f"{self.folder} holds the parts of a different run (other arguments or a changed "
                                 "collection); choose another parts folder or delete this one")
        else:
            _atomic_write(man, json.dumps({"digest": digest, "args": args, "shards": n_shards}, indent=1,
                                          default=str).encode())

    def path(self, shard: int) -> Path:
        return self.folder / f"part-{shard:05d}.npz"

    def done(self) -> set[int]:
        """Shards whose part is on disk."""
        return {int(p.stem[5:]) for p in self.folder.glob("part-*.npz") if p.stem[5:].isdigit()}

    def write(self, shard: int, reducer, part) -> None:
        """Save a part under a temporary name and rename it into place."""
        tmp = self.folder / f".part-{shard:05d}.{os.getpid()}.tmp.npz"
        reducer.save(part, tmp)
        os.replace(tmp, self.path(shard))

    def read(self, shard: int, reducer):
        return reducer.load(self.path(shard))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
