"""Train the classroom CNNs reproducibly on CPU: ``python -m models.classroom.train [--variant clean|spurious|both]``.

Seeds everything, uses deterministic algorithms and 2 threads, augments with the 8 flips/rotations by 90° (every
class is symmetric under them) and brightness/contrast jitter (no hue change, so the cue keeps its colours), logs
train/val loss and accuracy per epoch to JSON, writes the weights as .safetensors (labels, normalisation and test
accuracies in its metadata) and prints the test accuracy — for the spurious model also on the cue-flipped split.
``--tiny`` is a seconds-long configuration for the test suite.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..device import module_device
from . import dataset as D
from .net import ClassroomNet

WEIGHTS_DIR = Path(__file__).parent / "weights"
TEST_SEED = 1  # the training script's own test split; the test suite uses other seeds


@dataclass
class Config:
    variant: str = "clean"        # "clean" | "spurious"
    n_train: int = 8000
    n_val: int = 1000
    n_test: int = 1200
    epochs: int = 8
    batch: int = 128
    lr: float = 4e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2
    widths: tuple[int, int, int, int] = (16, 24, 48, 96)


TINY = dict(n_train=96, n_val=48, n_test=48, epochs=2, batch=32, widths=(4, 8, 8, 8))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale (the Preprocess normalisation)."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random element of the dihedral group (flips, rotations by 90°) per image, then brightness/contrast jitter."""
    out = x.clone()
    k = torch.randint(0, 8, (len(x),), generator=g)
    for t in range(8):
        idx = (k == t).nonzero().flatten()
        if len(idx):
            y = torch.rot90(x[idx], t % 4, dims=(2, 3))
            out[idx] = torch.flip(y, dims=(3,)) if t >= 4 else y
    b = 1 + 0.4 * (torch.rand(len(x), 1, 1, 1, generator=g) - 0.5)
    c = 1 + 0.4 * (torch.rand(len(x), 1, 1, 1, generator=g) - 0.5)
    m = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - m) * c + m * b).clamp_(0, 1)


@torch.no_grad()
def evaluate(net: nn.Module, x01: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
             batch: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``net`` in eval mode on [0, 1] images, computed on the net's device (the
    images move batch by batch; training itself stays on the CPU so the shipped weights are reproducible)."""
    net.eval()
    dev = module_device(net)
    mean, std = mean.to(dev), std.to(dev)
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        xb, yb = x01[i:i + batch].to(dev), y[i:i + batch].to(dev)
        logits = net((xb - mean) / std)
        loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return loss / len(y), correct / len(y)


def train(cfg: Config, out_dir: Path, log=print) -> dict:
    """Train one model; write ``classroom_<variant>.safetensors`` and ``classroom_<variant>_curves.json`` to
    ``out_dir``; return the curves dict (config, per-epoch rows, test accuracies). Torch's global thread count and
    determinism flag are restored afterwards (the test suite calls this in-process)."""
    threads, determ = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(cfg, out_dir, log)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(determ)


def _train(cfg: Config, out_dir: Path, log) -> dict:
    torch.manual_seed(cfg.seed)
    spurious = cfg.variant == "spurious"
    t0 = time.time()
    tr = D.generate("train", cfg.n_train, cfg.seed, spurious=spurious)
    va = D.generate("val", cfg.n_val, cfg.seed, spurious=spurious)
    log(f"[{cfg.variant}] data: {cfg.n_train} train / {cfg.n_val} val in {time.time() - t0:.1f}s")
    mean_t, std_t = channel_stats(tr.images)
    mean = torch.tensor(mean_t).view(1, 3, 1, 1)
    std = torch.tensor(std_t).view(1, 3, 1, 1)
    xtr, ytr = _to_tensor(tr.images), torch.from_numpy(tr.labels)
    xva, yva = _to_tensor(va.images), torch.from_numpy(va.labels)

    net = ClassroomNet(len(D.CLASSES), cfg.widths)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((cfg.n_train + cfg.batch - 1) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    g = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for epoch in range(1, cfg.epochs + 1):
        te = time.time()
        net.train()
        perm = torch.randperm(cfg.n_train, generator=g)
        tot_loss, tot_correct = 0.0, 0
        for i in range(0, cfg.n_train, cfg.batch):
            idx = perm[i:i + cfg.batch]
            xb = (augment(xtr[idx], g) - mean) / std
            logits = net(xb)
            loss = nn.functional.cross_entropy(logits, ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            tot_correct += int((logits.argmax(1) == ytr[idx]).sum())
        vl, vacc = evaluate(net, xva, yva, mean, std)
        rows.append(dict(epoch=epoch, train_loss=tot_loss / cfg.n_train, train_acc=tot_correct / cfg.n_train,
                         val_loss=vl, val_acc=vacc, seconds=round(time.time() - te, 2)))
        log(f"[{cfg.variant}] epoch {epoch:2d}  train loss {rows[-1]['train_loss']:.4f} acc "
            f"{rows[-1]['train_acc']:.4f}  val loss {vl:.4f} acc {vacc:.4f}  ({rows[-1]['seconds']:.1f}s)")

    net.eval()
    test = {}
    for name, kw in [("test", dict(spurious=spurious)), ("test_cue_flipped", dict(cue_flipped=True))]:
        te_ds = D.generate("test", cfg.n_test, TEST_SEED, **kw)
        test[name] = evaluate(net, _to_tensor(te_ds.images), torch.from_numpy(te_ds.labels), mean, std)[1]
    log(f"[{cfg.variant}] test accuracy {test['test']:.4f}  cue-flipped {test['test_cue_flipped']:.4f}  "
        f"(n={cfg.n_test}, seed {TEST_SEED}; total {time.time() - t0:.0f}s)")

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_d = asdict(cfg)
    meta = {"classes": json.dumps(D.CLASSES), "mean": json.dumps(mean_t), "std": json.dumps(std_t),
            "widths": json.dumps(list(cfg.widths)), "variant": cfg.variant,
            "test_acc": f"{test['test']:.4f}", "test_cue_flipped_acc": f"{test['test_cue_flipped']:.4f}",
            "config": json.dumps(cfg_d)}
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out_dir / f"classroom_{cfg.variant}.safetensors"), metadata=meta)
    curves = {"config": cfg_d, "epochs": rows, "test": test, "test_seed": TEST_SEED,
              "seconds": round(time.time() - t0, 1), "torch": torch.__version__}
    (out_dir / f"classroom_{cfg.variant}_curves.json").write_text(json.dumps(curves, indent=1))
    return curves


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=["clean", "spurious", "both"], default="both")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--tiny", action="store_true", help="seconds-long configuration (tests)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--n-train", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    for v in (["clean", "spurious"] if a.variant == "both" else [a.variant]):
        cfg = Config(variant=v, seed=a.seed, threads=a.threads, **(TINY if a.tiny else {}))
        if a.epochs:
            cfg.epochs = a.epochs
        if a.n_train:
            cfg.n_train = a.n_train
        train(cfg, a.out)


if __name__ == "__main__":
    main()
