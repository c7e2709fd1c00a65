"""Run a reducer over a collection on Ray: one actor per worker keeps the model (and whatever the reducer
prepares) loaded, shards are fed to idle workers, each shard's part streams back, is written to the parts
folder (resume) and merged exactly at the end.

Locally (no address) Ray starts on this machine with every port on 127.0.0.1, no dashboard and no usage
statistics; with an address (or ``CNN_LENS_RAY_ADDRESS``) it joins that cluster. Workers load models by registry
key (``models.registry.load_model``: the built-in models and the operator folder, whose location and the torch
cache are passed on in the workers' environment); a user's uploaded weights are not sent to workers. Every node
needs this checkout at the same path (it is put on the workers' PYTHONPATH).

Workers are kept in a pool per (model, threads, GPUs) for the life of the Ray connection, so a second scan does
not load the model again; one pool at a time (a run with another model stops the idle pool first, whose workers
would otherwise hold the CPUs the new ones need).

Faults: actors restart (``max_restarts``) and their in-flight shard is retried (``max_task_retries``); a shard
is pure (its part depends only on its images), so a retried shard gives the same part and the merge stays exact.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import ray
import torch
from ray.exceptions import RayActorError, RayError, RayTaskError

try:  # private: where Ray keeps its single-machine switch (see _loopback_only)
    import ray._private.ray_constants as ray_constants
except ImportError:  # pragma: no cover - another Ray layout; the environment variable still reaches new processes
    ray_constants = None

from interpret.core.errors import InputError
from interpret.scale.shards import DEFAULT_SHARD_BATCHES, PartsFolder, plan, run_digest
from models.collections import CollectionSpec, ImageCollection, fingerprint
from models.registry import list_models, load_model

ENV_ADDRESS = "CNN_LENS_RAY_ADDRESS"
REPO_ROOT = str(Path(__file__).resolve().parents[2])
PASSED_ENV = ("CNN_LENS_MODELS_DIR", "TORCH_HOME", "CNN_LENS_DEVICE", "HF_HOME")
_INIT_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------------------
# Connecting

def worker_env(threads: int = 1) -> dict[str, str]:
    """Environment of the worker processes: no usage statistics, this checkout importable, the torch thread
    count, and the model settings of this process."""
    path = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    env = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads),
           "TQDM_DISABLE": "1"}
    env.update({k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)})
    return env


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure this process is a Ray driver: join ``address`` or start a local Ray on 127.0.0.1 with
    ``num_cpus`` (default: the machine's cores). True if this call started the connection."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with _INIT_LOCK:
        if ray.is_initialized():
            return False
        common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                      runtime_env={"env_vars": worker_env()})
        try:
            if address:
                ray.init(address=address, **common)
            else:
                _loopback_only()
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, _node_ip_address="127.0.0.1", **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise InputError(f"could not start or reach {where}: {e}") from None
    return True


def _loopback_only() -> None:
    """Keep a local Ray on 127.0.0.1. ``ray.init`` turns a 127.0.0.1 node address into the machine's network
    address (and its servers then listen on every interface) unless Ray runs in its single-machine mode, which
    it uses on macOS/Windows and which ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` selects here: the node address
    stays the loopback one, the servers bind to it, and the processes Ray starts inherit the setting."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if ray_constants is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False  # read when ray was imported; the driver resolves addresses now


@contextlib.contextmanager
def session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """``connect`` for the length of a block; shuts Ray down after if the block started it (command line)."""
    started = connect(address, num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------------------
# Workers

class _Worker:
    """A Ray actor holding one model, loaded once when the actor starts (and again only if its process is
    restarted); each reducer's per-worker context (``prepare``) is built on its first shard and kept."""

    def __init__(self, model_key: str, threads: int, device: str) -> None:
        torch.set_num_threads(max(int(threads), 1))
        self.handle = load_model(model_key, device)  # "cpu", or "cuda" on a worker given GPUs
        self.contexts: dict[str, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    def run(self, reducer, run_id: str, shard: int, spec: CollectionSpec, items, board) -> Any:
        key = json.dumps(reducer.params(), sort_keys=True, default=str)
        if key not in self.contexts:
            self.contexts[key] = reducer.prepare(self.handle)
        images = spec.subset(items, f"{spec.location} [shard {shard}]")
        pid = os.getpid()

        def progress(done: int, total: int | None) -> None:
            board.report.remote(run_id, shard, done, pid)  # fire and forget

        return reducer.run(self.handle, self.contexts[key], images, progress, None)


class _Board:
    """A Ray actor the workers report to: per run, images done per shard and which worker processes ran it."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[dict[int, int], dict[int, list[int]]]] = {}

    def report(self, run_id: str, shard: int, done: int, pid: int) -> None:
        done_by, pids = self.runs.setdefault(run_id, ({}, {}))
        done_by[shard] = done
        seen = pids.setdefault(shard, [])
        if pid not in seen:
            seen.append(pid)

    def snapshot(self, run_id: str) -> tuple[dict[int, int], dict[int, list[int]]]:
        done_by, pids = self.runs.get(run_id, ({}, {}))
        return dict(done_by), {k: list(v) for k, v in pids.items()}

    def forget(self, run_id: str) -> None:
        self.runs.pop(run_id, None)


_RemoteWorker = ray.remote(_Worker)
_RemoteBoard = ray.remote(_Board)
_POOL_LOCK = threading.Lock()
_POOLS: dict[tuple, list] = {}  # (Ray job, model, threads, GPUs) → worker actors, kept between runs
_BOARDS: dict[str, Any] = {}


def _job() -> str:
    """This Ray connection: the job and the node the driver is attached to (both new after a restart)."""
    ctx = ray.get_runtime_context()
    return f"{ctx.get_job_id()}@{ctx.get_node_id()}"


def _pool(model_key: str, threads: int, gpus: float, n: int, max_retries: int) -> tuple[list, Any]:
    """``n`` workers holding ``model_key`` (started if missing, reused otherwise: the model stays loaded between
    runs of this process) and the progress board of this Ray session."""
    job = _job()
    with _POOL_LOCK:
        for k in [k for k in _POOLS if k[0] != job]:  # a previous Ray session: its actors are gone
            del _POOLS[k]
        for j in [j for j in _BOARDS if j != job]:
            del _BOARDS[j]
        key = (job, model_key, threads, gpus)
        for k in [k for k in _POOLS if k != key]:  # one pool at a time: idle workers of another model would hold
            for a in _POOLS.pop(k):               # the cluster's CPUs and the new workers could never start
                ray.kill(a, no_restart=True)
        pool = _POOLS.setdefault(key, [])
        while len(pool) < n:
            pool.append(_RemoteWorker.options(
                num_cpus=threads, num_gpus=gpus, max_restarts=max_retries, max_task_retries=max_retries,
                runtime_env={"env_vars": worker_env(threads)}).remote(model_key, threads, "cuda" if gpus else "cpu"))
        if job not in _BOARDS:
            _BOARDS[job] = _RemoteBoard.options(num_cpus=0, max_restarts=-1).remote()
        return pool[:n], _BOARDS[job]


def _drop_pool(model_key: str, threads: int, gpus: float) -> None:
    """Forget (and stop) a pool whose workers failed beyond their restarts."""
    with _POOL_LOCK:
        for a in _POOLS.pop((_job(), model_key, threads, gpus), []):
            ray.kill(a, no_restart=True)


# ---------------------------------------------------------------------------------------------------------
# Running

@dataclass
class Progress:
    """Where a run stands: images done (skipped ones included) of ``total``, and the rate of the images computed
    in this run (reused parts excluded)."""

    done: int
    total: int
    elapsed: float
    shards_done: int
    shards_total: int
    reused: int = 0  # images in parts reused from the parts folder
    running: dict[int, int] = field(default_factory=dict)  # shard in flight → pid of the worker that reported it

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def rate(self) -> float:
        return (self.done - self.reused) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def text(self) -> str:
        eta = "…" if self.eta is None else f"{self.eta:.0f} s"
        return (f"{self.done}/{self.total} images · {self.rate:.1f} images/s · ETA {eta} · "
                f"shards {self.shards_done}/{self.shards_total}")


@dataclass
class RunInfo:
    """How a run went: shards computed and reused, workers, shards that ran on more than one worker process
    (retried after a fault), wall time."""

    shards: int
    reused: int
    computed: int
    workers: int
    retried: int
    seconds: float
    cancelled: bool = False


def default_workers(threads_per_worker: int = 1, gpus_per_worker: float = 0) -> int:
    """Workers that fit the connected cluster: its CPUs / threads per worker (and GPUs / GPUs per worker)."""
    res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // max(threads_per_worker, 1))
    if gpus_per_worker:
        n = min(n, int(res.get("GPU", 0) // gpus_per_worker))
    return max(n, 1)


def run(reducer, model_key: str, spec: CollectionSpec, listing: ImageCollection | None = None, *,
        address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
        gpus_per_worker: float = 0, n_shards: int | None = None, shard_batches: int = DEFAULT_SHARD_BATCHES,
        parts_dir: str | os.PathLike | None = None, progress: Callable[[Progress], Any] | None = None,
        cancel: Callable[[], bool] | None = None, on_part: Callable[[int, Any], Any] | None = None,
        max_retries: int = 3, poll_s: float = 0.05) -> tuple[Any, RunInfo]:
    """``reducer`` over the collection ``spec`` names, on Ray; (merged result, RunInfo).

    ``listing``: the collection as listed by ``spec.open()`` (listed here if not given). ``parts_dir``: where
    finished shards' parts are kept and found again (resumable reducers only). ``progress(Progress)`` is called
    from this thread as reports arrive; ``cancel()`` returning True stops after the parts already finished
    (they stay in ``parts_dir``) and the merge of those is returned with ``cancelled``. ``on_part(shard,
    part)`` sees each part as it arrives (e.g. to write files)."""
    t0 = time.perf_counter()
    if listing is None:
        listing = spec.open()
    if model_key not in {m.key for m in list_models()}:
        raise InputError(f"unknown model {model_key!r} for a Ray run: workers load models of the model list "
                         "(python -m interpret list-models); uploaded weights are not sent to workers")
    batch = int(getattr(reducer, "batch_size", 1))
    shards = plan(listing, batch, n_shards, shard_batches if batch > 1 else shard_batches * 2)
    if not shards:
        raise InputError(f"the collection {spec.location} has no images")
    parts: dict[int, Any] = {}
    folder = None
    if parts_dir is not None and getattr(reducer, "resumable", False):
        args = {"model": model_key, "reducer": reducer.params(), "spec": [spec.kind, spec.location]}
        digest = run_digest(args, fingerprint(spec, listing), shards)
        folder = PartsFolder(parts_dir, digest, args, len(shards))
        for i in sorted(folder.done() & {s.index for s in shards}):
            parts[i] = folder.read(i, reducer)
    reused = len(parts)
    total = len(listing)
    reused_images = sum(reducer.n_images(p) for p in parts.values())
    todo = collections.deque(s for s in shards if s.index not in parts)
    sizes = {s.index: len(s) for s in shards}
    cancelled, retried, n_workers = False, 0, 0
    if todo:
        connect(address)
        n_workers = min(workers or default_workers(threads_per_worker, gpus_per_worker), len(todo))
        actors, board = _pool(model_key, threads_per_worker, gpus_per_worker, n_workers, max_retries)
        run_id = uuid.uuid4().hex
        inflight: dict[Any, tuple[int, Any]] = {}
        finished_images = reused_images
        pids: dict[int, list[int]] = {}

        def submit(actor) -> None:
            if todo:
                s = todo.popleft()
                ref = actor.run.remote(reducer, run_id, s.index, spec, list(s.items), board)
                inflight[ref] = (s.index, actor)

        try:
            # Two shards queued per worker (the next one is ready when one finishes), dealt round-robin: the
            # first round gives every worker a shard before any gets a second, or with few shards the first
            # worker would take them all while the others idle.
            for _ in range(2):
                for a in actors:
                    submit(a)
            last = 0.0
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=poll_s)
                for ref in ready:
                    shard, actor = inflight.pop(ref)
                    try:
                        part = ray.get(ref)
                    except RayTaskError as e:
                        cause = e.as_instanceof_cause()
                        if isinstance(cause, ValueError):  # InputError, ModelUnavailable, …: the user's problem
                            raise InputError(str(cause).splitlines()[-1]) from None
                        raise
                    except RayActorError as e:
                        _drop_pool(model_key, threads_per_worker, gpus_per_worker)
                        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
                        raise InputError(f"a Ray worker could not start, or died {max_retries + 1} times, on shard "
                                         f"{shard}: {first}") from None
                    parts[shard] = part
                    finished_images += reducer.n_images(part)
                    if folder is not None:
                        folder.write(shard, reducer, part)
                    if on_part is not None:
                        on_part(shard, part)
                    submit(actor)
                now = time.perf_counter()
                if progress is not None and (ready or now - last > 0.1):
                    last = now
                    done_by, pids = ray.get(board.snapshot.remote(run_id))
                    in_flight = {s for s, _ in inflight.values()}
                    running = {s: pids[s][-1] for s in in_flight if s in pids}
                    partial = sum(min(done_by.get(s, 0), sizes[s]) for s in in_flight)
                    progress(Progress(finished_images + partial, total, now - t0, len(parts), len(shards),
                                      reused_images, running))
                if cancel is not None and cancel():
                    cancelled = True
                    break
            _, pids = ray.get(board.snapshot.remote(run_id))
            retried = sum(1 for v in pids.values() if len(v) > 1)
        finally:
            # Stopped or failed: shards not started are cancelled; a shard already running finishes on its worker
            # and is dropped (the workers stay, with their models, for the next run).
            for ref in inflight:
                with contextlib.suppress(RayError, ValueError, TypeError):
                    ray.cancel(ref)
            board.forget.remote(run_id)
    result = reducer.merge([parts[i] for i in sorted(parts)])
    seconds = time.perf_counter() - t0
    result = reducer.finish(result, listing, seconds, cancelled or len(parts) < len(shards))
    return result, RunInfo(len(shards), reused, len(parts) - reused, n_workers, retried, seconds,
                           cancelled)


__all__ = ["ENV_ADDRESS", "Progress", "RayError", "RunInfo", "connect", "default_workers", "run", "session",
           "worker_env"]
