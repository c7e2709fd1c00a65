"""torchvision weights on request: a zoo model's DEFAULT weight file fetched into the torch hub cache.

Only on a user's click (nothing at start-up or in tests but from 127.0.0.1). The transfer is torch hub's own
``download_url_to_file``: it writes to a ``.partial`` temporary file in the cache folder, checks the SHA-256
prefix that torchvision puts in the file name (``resnet18-f37072fd.pth``) and only then moves the file to its
final name, so a failed or refused download never leaves a file that the zoo would take for the weights. It runs
in a worker thread while the caller's thread reports progress from the size of that temporary file.

``CNN_LENS_WEIGHTS_URL`` (or ``base_url``) replaces the folder part of the official URL, for a mirror or a test
server; the file name, and so the hash check, stay those of torchvision.
"""
from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch

from . import zoo

ENV_VAR = "CNN_LENS_WEIGHTS_URL"
Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None when unknown)


class DownloadError(RuntimeError):
    """The weights could not be fetched or were refused; the message says why and how to place them by hand."""


def weights_url(arch: str, base_url: str | None = None) -> str:
    """The URL the DEFAULT weights of ``arch`` are fetched from: torchvision's, or its file name under
    ``base_url`` / $CNN_LENS_WEIGHTS_URL when one is set."""
    url = zoo.default_weights(arch).url
    base = base_url if base_url is not None else os.environ.get(ENV_VAR, "").strip()
    return f"{base.rstrip('/')}/{os.path.basename(url)}" if base else url


def hash_prefix(file_name: str) -> str:
    """The SHA-256 prefix torch hub reads from a checkpoint's name (``name-<hex>.pth``); '' when it has none."""
    m = torch.hub.HASH_REGEX.search(file_name)
    return m.group(1) if m else ""


def _content_length(url: str, timeout: float) -> int | None:
    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "cnn-lens"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            n = r.headers.get("Content-Length")
        return int(n) if n and n.isdigit() else None
    except (OSError, ValueError):
        return None


def _partial_size(dst: Path) -> int:
    """Bytes written so far into torch hub's temporary file(s) for ``dst`` (``dst.<hex>.partial``)."""
    total = 0
    for p in dst.parent.glob(dst.name + ".*.partial"):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


def download_weights(arch: str, *, base_url: str | None = None, progress: Progress | None = None,
                     expected_prefix: str | None = None, timeout: float = 30.0) -> Path:
    """Fetch the DEFAULT weights of zoo model ``arch`` into ``zoo.checkpoint_dir()``; the path of the file.

    The SHA-256 of the download must start with ``expected_prefix`` (default: the prefix in torchvision's file
    name). Raises DownloadError (no file left under the final name) when the server cannot be reached, answers
    with an error or sends a file with another hash."""
    status = zoo.weights_status(arch)
    if status.present:
        return status.path
    url = weights_url(arch, base_url)
    prefix = hash_prefix(status.file_name) if expected_prefix is None else expected_prefix
    status.path.parent.mkdir(parents=True, exist_ok=True)
    total = _content_length(url, timeout) if progress else None
    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            torch.hub.download_url_to_file(url, str(status.path), hash_prefix=prefix or None, progress=False)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=work, name=f"cnn-lens download {arch}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
        if progress:
            progress(_partial_size(status.path), total)
    err = outcome.get("error")
    if err is None:
        if progress:
            size = status.path.stat().st_size
            progress(size, total or size)
        return status.path
    if isinstance(err, RuntimeError) and "invalid hash" in str(err):
        status.path.unlink(missing_ok=True)  # torch moves only a checked file there; made sure all the same
        raise DownloadError(f"The file downloaded from {url} is not the expected one: its SHA-256 does not start "
                            f"with {prefix} (the hash in torchvision's file name), so it was refused and deleted. "
                            f"{status.message()}") from None
    code = getattr(err, "code", None)  # urllib's HTTPError: the server answered with an error status
    reason = f"HTTP {code} ({getattr(err, 'reason', '')})" if code else (getattr(err, "reason", None) or err)
    raise DownloadError(f"Could not download the weights from {url}: {reason}. {status.message()}") from None

