"""Export: any registered family's network → ONNX (state as named I/O) → TensorRT plan, each with a sidecar.

Why it is like this: the input representation (LETC's data-dependent scatter, the E2VID voxel grid) and the
post-processing are family code in numpy, so the graph starts at the network input ``[1, C, H, W]`` and ends at
the padded image. The recurrent state is named inputs ``<name>_in`` and outputs ``<name>_out``; shapes are
static, one exported file per camera resolution (simpler, and what CUDA graphs need). The export works on a copy
(the caller's model keeps its precision), describes the family from the float32 weights, and writes ONE
self-contained ``.onnx`` (torch's exporter may put weights in a separate ``.onnx.data``; they are folded back in
below 2 GB) whose sha256 the sidecar records, weights included.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from livenight import __version__

from .sidecar import SIDECAR_FORMAT, sha256_of, sidecar_path

_TWO_GB = 2 << 30


def describe(model, dtype: str, source: str | None = None, family=None, windows: dict | None = None,
             **post_options) -> dict:
    """The sidecar of an exported network (everything an engine needs besides the graph)."""
    from livenight import families

    family = family or families.family_of(model)
    cfg = model.cfg
    w, h = cfg.sensor_size
    pw, ph = cfg.padded_size
    meta = {
        "format": SIDECAR_FORMAT, "livenight_version": __version__,
        "family": family.describe(model, **post_options),
        "sensor_size": [w, h], "padded_size": [pw, ph], "padding": list(cfg.padding()), "dtype": dtype,
        "input": {"name": "input", "shape": [1, cfg.in_channels, h, w]},
        "state": [{"name": n, "shape": list(s)} for n, s in cfg.state_shapes().items()],
        "output": {"name": "image", "shape": [1, 1, ph, pw]},
        "source": {"path": source, "sha256": sha256_of(source) if source and Path(source).exists() else None},
    }
    if windows:
        meta["windows"] = windows
    return meta


def _step_module(model):
    """``(input, *state) -> (image, *state)`` around a network (built lazily to keep torch out of imports)."""
    import torch

    class Step(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, *state):
            img, new_state = self.net(x, state)
            return (img, *new_state)

    return Step(model)


def _single_file(path: Path) -> list[Path]:
    """Fold external weights back into the ``.onnx`` (below 2 GB); returns the files that make the export."""
    import onnx

    data = sorted(path.parent.glob(path.name + "*.data"))
    if not data:
        return [path]
    if sum(p.stat().st_size for p in data) + path.stat().st_size >= _TWO_GB:
        return [path, *data]  # protobuf cannot hold it: keep the external data beside the graph
    proto = onnx.load(str(path), load_external_data=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    for p in data:
        p.unlink()
    return [path]


def export_onnx(model, out_path: str | os.PathLike, fp16: bool = False, opset: int = 18, source: str | None = None,
                family=None, windows: dict | None = None, **post_options) -> dict:
    """Export a network (at its ``cfg.sensor_size``) to ONNX plus sidecar; returns the sidecar dict (its
    ``"files"`` lists every file written)."""
    import torch

    from livenight._optional import require

    require("onnxscript", "ONNX export")
    require("onnx", "ONNX export")
    out_path = Path(out_path)
    dtype = torch.float16 if fp16 else torch.float32
    ref = copy.deepcopy(model).float().eval()  # export a copy: the caller's model keeps its precision
    meta = describe(ref, "float16" if fp16 else "float32", source, family, windows, **post_options)
    net = ref.to(dtype)
    cfg = net.cfg
    w, h = cfg.sensor_size
    x = torch.zeros(1, cfg.in_channels, h, w, dtype=dtype)
    state = net.initial_state(dtype=dtype)
    names = net.state_names
    import logging
    import warnings

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the exporter's notes (missing torchvision ops, …) are not the user's concern
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_step_module(net), (x, *state), str(out_path), dynamo=True, opset_version=opset,
                          input_names=["input", *[f"{n}_in" for n in names]],
                          output_names=["image", *[f"{n}_out" for n in names]], verbose=False)
    quiet.setLevel(level)
    files = _single_file(out_path)
    meta["onnx"] = {"opset": opset, "sha256": sha256_of(out_path)}
    sidecar_path(out_path).write_text(json.dumps(meta, indent=1))
    meta["files"] = [str(p) for p in files] + [str(sidecar_path(out_path))]
    return meta


def build_tensorrt(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, workspace_mib: int = 4096,
                   timing_cache: str | os.PathLike | None = None) -> dict:
    """Build a TensorRT plan from an (FP16) ONNX as a strongly typed network (TensorRT 10.x and 11.x)."""
    from .trt_engine import build_engine

    return build_engine(onnx_path, engine_path, workspace_mib=workspace_mib, timing_cache=timing_cache)


def cached_onnx(checkpoint: str | os.PathLike, sensor_size: tuple[int, int], cache_dir: str | os.PathLike | None = None,
                say=print, windows: dict | None = None) -> Path:
    """An ONNX export of ``checkpoint`` for ``sensor_size``, made once and kept in a cache folder
    (``$LIVENIGHT_CACHE`` or ``~/.cache/livenight``), keyed by the checkpoint's sha256, the size and the sidecar
    format."""
    from livenight import families
    from livenight.model.checkpoint import read_checkpoint

    checkpoint = Path(checkpoint)
    root = Path(cache_dir or os.environ.get("LIVENIGHT_CACHE") or Path.home() / ".cache" / "livenight")
    w, h = sensor_size
    version = SIDECAR_FORMAT.rsplit("/", 1)[-1]
    path = root / f"{checkpoint.stem}-{sha256_of(checkpoint)[:16]}-{w}x{h}-v{version}.onnx"
    if path.exists() and sidecar_path(path).exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    say(f"livenight: exporting {checkpoint.name} to ONNX for {w}x{h} (once; cached in {root})")
    ck = read_checkpoint(checkpoint)
    family = families.detect(ck, str(checkpoint))
    model = family.from_checkpoint(ck, sensor_size, str(checkpoint))
    tmp = path.with_name(path.stem + ".part.onnx")
    export_onnx(model, tmp, source=str(checkpoint), family=family, windows=windows)
    meta = json.loads(sidecar_path(tmp).read_text())
    sidecar_path(tmp).unlink()
    os.replace(tmp, path)
    sidecar_path(path).write_text(json.dumps(meta, indent=1))
    return path
