"""User weights: safe loading only, and a specific message for every kind of bad file."""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import pytest
import torch
from torch import nn

from models import zoo
from models.checkpoints import CheckpointError, load_user_model, read_labels, read_state_dict

MARKER_ENV = "CNN_LENS_PWNED_MARKER"


class _Evil:
    """Unpickling this would create a file: the test asserts that it never happens."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    net = zoo.build("resnet18", weights=False)
    net.fc = nn.Linear(512, 5)
    return net.eval()


def test_resnet18_state_dict_round_trip(r18):
    h = load_user_model("resnet18", _save(r18.state_dict()), "mine.pt", b"a\nb\nc\nd\ne\n")
    assert h.num_classes == 5 and h.labels == list("abcde")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(h.net(x), r18(x))
    assert not h.net.training


def test_safetensors_and_wrapped_and_dataparallel(r18):
    from safetensors.torch import save
    x = torch.randn(1, 3, 64, 64)
    sd = r18.state_dict()
    for data in (save({k: v.contiguous() for k, v in sd.items()}), _save({"state_dict": sd}),
                 _save({"module." + k: v for k, v in sd.items()})):
        h = load_user_model("resnet18", data, "w")
        with torch.no_grad():
            torch.testing.assert_close(h.net(x), r18(x))


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    data = _save({"fc.weight": torch.zeros(2, 2), "payload": _Evil(str(marker))})
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        read_state_dict(data, "evil.pt")
    raw = pickle.dumps(_Evil(str(marker)))
    with pytest.raises(CheckpointError):
        read_state_dict(raw, "evil.pkl")
    assert not marker.exists()


def test_whole_module_is_refused(r18):
    with pytest.raises(CheckpointError, match="whole saved"):
        read_state_dict(_save(r18), "model.pt")


def test_torchscript_is_refused():
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), buf)
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_state_dict(buf.getvalue(), "scripted.pt")


@pytest.mark.parametrize("data,match", [(b"", "empty"), (os.urandom(4096), "not a PyTorch weights file"),
                                        (b"hello world, not weights", "not a PyTorch weights file")])
def test_junk_files(data, match):
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(data, "x.pt")


def test_missing_and_wrong_shape_keys_are_named(r18):
    sd = dict(r18.state_dict())
    del sd["layer1.0.conv1.weight"]
    sd["layer2.0.bn1.weight"] = torch.ones(7)
    with pytest.raises(CheckpointError) as e:
        load_user_model("resnet18", _save(sd), "w.pt")
    msg = str(e.value)
    assert "Missing keys (1): layer1.0.conv1.weight" in msg
    assert "Wrong shapes (1): layer2.0.bn1.weight: file (7,) vs model (128,)" in msg


def test_unexpected_keys_are_named(r18):
    sd = dict(r18.state_dict())
    sd["extra.head.weight"] = torch.ones(3)
    with pytest.raises(CheckpointError, match=r"Unexpected keys \(1\): extra.head.weight"):
        load_user_model("resnet18", _save(sd), "w.pt")


def test_other_architecture_is_recognised():
    sd = zoo.build("mobilenet_v2", weights=False).state_dict()
    with pytest.raises(CheckpointError, match="another architecture"):
        load_user_model("resnet18", _save(sd), "w.pt")


def test_network_without_convolution():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match="no convolution weights"):
        load_user_model("resnet18", _save(mlp.state_dict()), "mlp.pt")


def test_labels_formats():
    assert read_labels(b"cat\ndog\n", 2) == ["cat", "dog"]
    assert read_labels(b'["cat", "dog"]', 2) == ["cat", "dog"]
    assert read_labels(b'{"1": "dog", "0": "cat"}', 2) == ["cat", "dog"]
    assert read_labels(None, 2) == ["class 0", "class 1"]
    with pytest.raises(CheckpointError, match="names 3 classes but the weights have 2"):
        read_labels(b"a\nb\nc", 2)


# ---- memory bounded by what the tensors will occupy once loaded, read before anything is materialised ----------

def _st_file(header: dict, body: bytes = b"", pad_to: int = 0) -> bytes:
    """A safetensors file written by hand: 8-byte little-endian header length, JSON header, data."""
    h = json.dumps(header).encode()
    h += b" " * max(0, pad_to - len(h))
    return len(h).to_bytes(8, "little") + h + body


def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive written by hand, one (name, stored bytes, method, crc32, declared size) per member, so a test
    can store a deflate stream of its choosing and declare any uncompressed size."""
    out, central = b"", b""
    for name, body, method, crc, size in members:
        n = name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(body), size,
                               len(n), 0, 0, 0, 0, 0, len(out)) + n
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(body), size, len(n), 0) + n + body
    return out + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                                       len(out), 0)


def _deflated_zeros(mib: int) -> tuple[bytes, int]:
    """(raw deflate stream, crc32) of ``mib`` MiB of zeros, made in milliseconds: after a full flush the compressor
    starts afresh, so every further MiB of zeros compresses to the same bytes."""
    chunk = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH) == block
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    return first + block * (mib - 2) + c.flush(), crc


def _pt_with_member(replace: str, body: bytes, method: int, crc: int, size: int) -> bytes:
    """A real torch.save archive of {"fc.weight": zeros(4)} with one member swapped for the given bytes."""
    z = zipfile.ZipFile(io.BytesIO(_save({"fc.weight": torch.zeros(4)})))
    members = []
    for info in z.infolist():
        if info.filename.endswith(replace):
            members.append((info.filename, body, method, crc, size))
        else:
            data = z.read(info.filename)
            members.append((info.filename, data, 0, zlib.crc32(data), len(data)))
    return _zip(members)


def _hostile_files() -> dict[str, bytes]:
    bomb, crc = _deflated_zeros(700)  # 700 MiB of storage in well under 1 MB
    return {
        # a 100-byte safetensors file whose header declares an 8 GiB tensor
        "header_8gb.safetensors": _st_file({"w": {"dtype": "F32", "shape": [2 ** 31], "data_offsets": [0, 2 ** 33]}}),
        # a .pt whose storage member really inflates to 700 MiB
        "bomb.pt": _pt_with_member("data/0", bomb, zipfile.ZIP_DEFLATED, crc, 700 << 20),
        # a .pt whose central directory declares a 4 GiB member
        "declared.pt": _pt_with_member("data/0", bytes(16), 0, zlib.crc32(bytes(16)), 0xFFFF0000),
        # a 1-element storage viewed with stride 0 as 10⁶ × 10⁴ (a classifier of a million classes)
        "stride0.pt": _save({"fc.weight": torch.zeros(1).expand(10 ** 6, 10 ** 4)}),
    }


_MEASURE = """
import json, resource, sys, time
from models.checkpoints import CheckpointError, read_state_dict
out = {}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    try:
        read_state_dict(data, path.rsplit("/", 1)[-1])
        msg = None
    except CheckpointError as e:
        msg = str(e)
    out[path.rsplit("/", 1)[-1]] = [msg, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before,
                                    time.perf_counter() - t0]
print(json.dumps(out))
"""


def test_declared_sizes_are_refused_before_anything_is_allocated(tmp_path):
    """Each hostile file is refused with the limit, and the peak memory of a fresh process does not move (a
    real inflation or allocation of the declared size would raise it by hundreds of MB)."""
    files = _hostile_files()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert len(data) < 2 << 20, name  # small uploads, far below the 600 MB upload limit
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-c", _MEASURE, *(str(tmp_path / n) for n in files)], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for name in files:
        msg, grew_kb, seconds = got[name]
        assert msg is not None and "of memory once loaded; at most 600 MB are accepted" in msg, (name, msg)
        assert grew_kb < 64 * 1024, (name, grew_kb)  # ru_maxrss is in KiB on Linux
        assert seconds < 5, (name, seconds)
    assert "8.0 GB" in got["header_8gb.safetensors"][0] and "700 MB" in got["bomb.pt"][0]


def test_safetensors_header_is_checked_without_python_allocations():
    data = _hostile_files()["header_8gb.safetensors"]
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="8.0 GB of memory once loaded"):
            read_state_dict(data, "w.safetensors")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_within_the_limit_loads_and_the_limit_is_one_constant(r18, monkeypatch):
    from safetensors.torch import save
    from models import checkpoints

    sd = {k: v.contiguous() for k, v in r18.state_dict().items()}
    size = sum(v.numel() * v.element_size() for v in sd.values())
    for data in (save(sd), _save(sd)):
        assert read_state_dict(data, "w").keys() == sd.keys()
        monkeypatch.setattr(checkpoints, "MAX_LOADED_BYTES", size - 1)
        with pytest.raises(CheckpointError, match="once loaded"):
            read_state_dict(data, "w")
        monkeypatch.undo()


# ---- a damaged safetensors file is named as such ---------------------------------------------------------------

def _good_st() -> bytes:
    from safetensors.torch import save
    return save({"a": torch.arange(3, dtype=torch.float32), "b": torch.ones(2, dtype=torch.float16)})


def _hdr(d: bytes) -> tuple[int, bytes, bytes]:
    n = int.from_bytes(d[:8], "little")
    return n, d[8:8 + n], d[8 + n:]


def _rewrite(header: bytes, body: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header + body


def _corrupt() -> dict[str, bytes]:
    d = _good_st()
    n, h, body = _hdr(d)
    head = json.loads(h)
    far = dict(head, b=dict(head["b"], data_offsets=[12, 4000]))
    overlap = dict(head, b=dict(head["b"], data_offsets=[8, 12]))
    odd = dict(head, b=dict(head["b"], dtype="Q7"))
    # a header padded to 384 bytes: its length field starts with 0x80, the byte a pickle starts with
    pickle_like = _st_file(head, body[:-2], pad_to=384)
    assert pickle_like[:1] == b"\x80"
    return {
        "short": d[:5],
        "length beyond the file": (len(d) * 2).to_bytes(8, "little") + d[8:],
        "zero length": (0).to_bytes(8, "little") + d[8:],
        "bad json": _rewrite(b'{"a": {"dtype": "F32", "shape": [3], ', body),
        "not an object": _rewrite(b"[1, 2, 3]", body),
        "not utf-8": _rewrite(b'{"\xff\xfe": 1}', body),
        "offsets out of range": _rewrite(json.dumps(far).encode(), body),
        "overlapping offsets": _rewrite(json.dumps(overlap).encode(), body),
        "unknown dtype": _rewrite(json.dumps(odd).encode(), body),
        "truncated data": d[:-3],
        "stray bytes": d + b"\0" * 5,
        "truncated, pickle-like first byte": pickle_like,
    }


@pytest.mark.parametrize("kind", list(_corrupt()))
def test_damaged_safetensors_is_named_as_such(kind):
    data = _corrupt()[kind]
    with pytest.raises(CheckpointError) as e:
        read_state_dict(data, "weights.safetensors")
    msg = str(e.value)
    assert msg.startswith("This is a damaged .safetensors file:"), msg
    assert "pickle" not in msg.lower(), msg


def test_damaged_safetensors_is_recognised_by_content_too():
    """Whatever the file is called, a safetensors header followed by damaged data is named as safetensors."""
    for kind in ("bad json", "offsets out of range", "truncated data", "truncated, pickle-like first byte"):
        with pytest.raises(CheckpointError, match="damaged .safetensors"):
            read_state_dict(_corrupt()[kind], "weights.pt")
    assert read_state_dict(_good_st(), "weights.pt")["a"].tolist() == [0.0, 1.0, 2.0]


def test_legacy_and_bare_pickles_are_refused_before_loading(tmp_path):
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(2, 2)}, buf, _use_new_zipfile_serialization=False)
    for data in (buf.getvalue(), pickle.dumps({"fc.weight": [1.0, 2.0]}, protocol=2)):
        with pytest.raises(CheckpointError, match="legacy"):
            read_state_dict(data, "old.pt")


# ---- a classifier needs at least one class ---------------------------------------------------------------------

def test_zero_output_classes_is_refused(r18):
    from safetensors.torch import save

    sd = dict(r18.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(0, 512), torch.zeros(0)
    for data in (_save(sd), save({k: v.contiguous() for k, v in sd.items()})):
        with pytest.raises(CheckpointError, match="no output classes"):
            load_user_model("resnet18", data, "w.pt")


# ---- checkpoint shapes people save (issue 14) -------------------------------------------------------------------

def _save_with_module(obj_fn, module: str, name: str, base: type = object) -> bytes:
    """torch.save(obj_fn(cls)) for a class ``cls`` that pickles as ``module.name`` (as Lightning's or a user's
    would), importable only while the test saves: loading must never need it."""
    import types

    mod = types.ModuleType(module)
    cls = type(name, (base,), {"__module__": module})
    setattr(mod, name, cls)
    parts = module.split(".")
    saved = {p: sys.modules.get(p) for p in (".".join(parts[:i + 1]) for i in range(len(parts)))}
    for p in saved:
        sys.modules[p] = mod if p == module else sys.modules.get(p) or types.ModuleType(p)
    try:
        return _save(obj_fn(cls))
    finally:
        for p, old in saved.items():
            if old is None:
                sys.modules.pop(p, None)
            else:
                sys.modules[p] = old


def test_lightning_checkpoint_loads_with_its_prefix_stripped(r18):
    """{"state_dict": {"model.…"}, "optimizer_states": […], "epoch": 3, "hyper_parameters": AttributeDict}: the
    AttributeDict (a class weights_only refuses) is read as an inert stand-in, the rest is ignored."""
    from models.checkpoints import inspect_weights

    sd = r18.state_dict()
    data = _save_with_module(lambda AttributeDict: {
        "state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 3, "global_step": 120,
        "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]}],
        "hyper_parameters": AttributeDict(lr=0.1, num_classes=5), "pytorch-lightning_version": "2.4.0"},
        "lightning.fabric.utilities.data", "AttributeDict", dict)
    assert "lightning.fabric.utilities.data" not in sys.modules
    info = inspect_weights(data, "last.ckpt")
    assert info.variants == ("raw",) and info.num_classes == 5 and info.classifier == "fc.weight"
    assert set(info.ignored) == {"epoch", "global_step", "optimizer_states", "hyper_parameters",
                                 "pytorch-lightning_version"}
    assert info.num_tensors == len(sd) and info.loaded_bytes == sum(v.numel() * v.element_size() for v in sd.values())
    h = load_user_model("resnet18", data, "last.ckpt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(h.net(x), r18(x))


def test_timm_ema_checkpoint_offers_both_weights(r18):
    """timm's train.py checkpoint: state_dict, state_dict_ema, optimizer, args (an argparse.Namespace)."""
    import argparse
    import copy
    from models.checkpoints import inspect_weights

    ema_net = copy.deepcopy(r18)
    with torch.no_grad():
        for p in ema_net.parameters():
            p.mul_(0.9).add_(0.01)
    data = _save({"epoch": 7, "arch": "resnet18", "state_dict": r18.state_dict(),
                  "state_dict_ema": {"module." + k: v for k, v in ema_net.state_dict().items()},
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
                  "args": argparse.Namespace(model="resnet18", lr=0.1), "version": 2, "metric": 71.5})
    info = inspect_weights(data, "model_best.pth.tar")
    assert info.variants == ("raw", "ema") and not info.has_nonfinite
    x = torch.randn(1, 3, 64, 64)
    raw, ema = (load_user_model("resnet18", data, "best.pth", variant=v) for v in ("raw", "ema"))
    with torch.no_grad():
        torch.testing.assert_close(raw.net(x), r18(x))
        torch.testing.assert_close(ema.net(x), ema_net(x))
        assert not torch.allclose(raw.net(x), ema.net(x))
    assert raw.key != ema.key and "EMA" in ema.name
    with pytest.raises(CheckpointError, match="no EMA weights"):
        read_state_dict(_save(r18.state_dict()), "w.pt", variant="ema")


def test_other_pickled_classes_are_refused_and_named(r18):
    data = _save_with_module(lambda Config: {"state_dict": r18.state_dict(), "hyper_parameters": Config()},
                             "my_project.config", "Config")
    with pytest.raises(CheckpointError, match=r"pickled Python objects.*my_project\.config\.Config"):
        read_state_dict(data, "last.ckpt")


def test_compile_and_dataparallel_prefixes_and_missing_batch_counts(r18):
    sd = {"module._orig_mod." + k: v for k, v in r18.state_dict().items() if not k.endswith("num_batches_tracked")}
    from safetensors.torch import save
    h = load_user_model("resnet18", save({k: v.contiguous() for k, v in sd.items()}), "w.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(h.net(x), r18(x))


def test_nan_weights_are_named(r18):
    sd = dict(r18.state_dict())
    sd["layer1.0.conv1.weight"] = sd["layer1.0.conv1.weight"].clone()
    sd["layer1.0.conv1.weight"][0, 0, 0, :2] = float("nan")
    sd["fc.bias"] = torch.tensor([0.0, float("inf"), 0.0, 0.0, float("-inf")])
    from models.checkpoints import inspect_weights

    info = inspect_weights(_save(sd), "w.pt")
    assert info.has_nonfinite and set(info.nonfinite) == {"layer1.0.conv1.weight", "fc.bias"}
    with pytest.raises(CheckpointError, match=r"2 tensors hold NaN or infinite values: layer1\.0\.conv1\.weight "
                                              r"\(2 NaN\); fc\.bias \(2 inf\)"):
        load_user_model("resnet18", _save(sd), "w.pt")


def test_a_vision_transformer_offered_as_a_cnn_is_explained():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2).state_dict()
    with pytest.raises(CheckpointError, match=r"vision transformer, not a CNN: its only convolution, "
                                              r"patch_embed\.proj\.weight \(16×16 kernel\)") as e:
        load_user_model("resnet18", _save(vit), "vit.pt")
    assert "attention weights" in str(e.value)
    from models.checkpoints import inspect_weights
    assert "vision transformer" in inspect_weights(_save(vit), "vit.pt").not_a_cnn
    with pytest.raises(CheckpointError, match="vision transformer"):
        load_user_model("timm:vit_tiny_patch16_224", _save(vit), "vit.pt")


def test_keys_that_fit_no_architecture_point_to_the_finder(r18):
    sd = {f"encoder.block{i}.weight": torch.zeros(8, 8, 3, 3) for i in range(6)}
    sd["head.weight"], sd["head.bias"] = torch.zeros(4, 8), torch.zeros(4)
    with pytest.raises(CheckpointError, match=r"do not fit ResNet-18\.\nMost keys differ.*Which architecture is "
                                              r"this.*\nMissing keys \(\d+\): conv1\.weight; bn1\.weight"):
        load_user_model("resnet18", _save(sd), "w.pt")
    sd2 = dict(zoo.build("mobilenet_v2", weights=False).state_dict())
    with pytest.raises(CheckpointError, match="Which architecture is this"):
        load_user_model("resnet18", _save(sd2), "w.pt")


def test_timm_zero_classes_is_refused():
    import timm

    sd = timm.create_model("resnet18", pretrained=False, num_classes=3).state_dict()
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(0, 512), torch.zeros(0)
    with pytest.raises(CheckpointError, match="no output classes"):
        load_user_model("timm:resnet18", _save(sd), "w.pt")


def test_numpy_and_path_entries_are_read_as_inert_stand_ins(r18, tmp_path):
    import argparse
    import pathlib

    import numpy as np

    sd = r18.state_dict()
    data = _save({"state_dict": sd, "metric": np.float64(71.5), "history": np.arange(3.0),
                  "output_dir": pathlib.PurePosixPath("/runs/exp1"), "args": argparse.Namespace(lr=0.1)})
    assert read_state_dict(data, "ckpt.pth").keys() == sd.keys()
    # an allow-listed class beside one that would run code: the whole file is refused, nothing runs
    marker = tmp_path / "pwned"
    evil = _save({"state_dict": sd, "args": argparse.Namespace(lr=0.1), "payload": _Evil(str(marker))})
    with pytest.raises(CheckpointError, match=r"pickled Python objects.*\b(io|builtins)\.open"):
        read_state_dict(evil, "ckpt.pth")
    assert not marker.exists()
