"""Export: model → ONNX (state as named I/O) → TensorRT plan, each with a JSON sidecar that describes it.

Why it is like this: the per-event LETC scatter is data dependent, so it stays outside the graph (the engine input
is the ``[1, 2C, H, W]`` quantisation grid) and the sidecar carries the LETC MLP weights that the engine tabulates.
The recurrent state is 7 named inputs ``h0_in … m_in`` and outputs ``h0_out … m_out``; shapes are static, one
exported file per camera resolution (simpler, and what CUDA graphs need). Loading compares the sidecar with the
source and says what to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from livenight import __version__
from livenight.errors import EngineMismatchError, SourceError

SIDECAR_FORMAT = "livenight-engine/1"


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(model, dtype: str, source: str | None = None) -> dict:
    """The sidecar for an exported ``NERNet`` (everything an engine needs besides the graph)."""
    from livenight.letc import LetcTable

    cfg = model.cfg
    shapes = cfg.state_shapes()
    w, h = cfg.sensor_size
    return {
        "format": SIDECAR_FORMAT, "livenight_version": __version__, "arch": "NERNet", "model": cfg.to_dict(),
        "bins": cfg.num_bins, "sensor_size": [w, h], "padded_size": list(cfg.padded_size),
        "pad_multiple": cfg.pad_multiple, "padding": list(cfg.padding()), "dtype": dtype,
        "input": {"name": "grid", "shape": [1, cfg.in_channels, h, w]},
        "state": [{"name": n, "shape": list(s)} for n, s in shapes.items()],
        "output": {"name": "image", "shape": [1, 1, cfg.padded_size[1], cfg.padded_size[0]]},
        "letc": LetcTable.from_model(model).to_json(),
        "source": {"path": source, "sha256": _sha256(Path(source)) if source and Path(source).exists() else None},
    }


def read_sidecar(path: str | os.PathLike) -> dict:
    side = sidecar_path(path)
    if not side.exists():
        raise EngineMismatchError(f"{path}: its description {side.name} is missing; rebuild it with "
                                  f"'livenight export MODEL --onnx {Path(path).name}'")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{side}: not valid JSON ({e})") from None
    if meta.get("format") != SIDECAR_FORMAT:
        raise EngineMismatchError(f"{side}: format {meta.get('format')!r} is not {SIDECAR_FORMAT!r}; rebuild it with "
                                  "this livenight version")
    return meta


def check_sidecar(meta: dict, path: str | os.PathLike, sensor_size: tuple[int, int]) -> None:
    """Fail early, in one sentence, when an exported engine does not fit the source."""
    w, h = (int(v) for v in sensor_size)
    ew, eh = meta["sensor_size"]
    if (ew, eh) != (w, h):
        pw, ph = meta["padded_size"]
        raise EngineMismatchError(
            f"{Path(path).name} expects {meta['bins']} bins at {pw}x{ph} ({ew}x{eh} padded to /{meta['pad_multiple']}); "
            f"the source is {w}x{h}. Rebuild with 'livenight export MODEL --onnx {Path(path).name} --size {w}x{h}'")


class _Step:
    """Wrap NERNet as ``(grid, *state) -> (image, *state)`` for export (built lazily to keep torch out)."""

    @staticmethod
    def make(model):
        import torch

        class Step(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, grid, *state):
                img, new_state = self.net(grid, state)
                return (img, *new_state)

        return Step(model)


def export_onnx(model, out_path: str | os.PathLike, fp16: bool = False, opset: int = 18,
                source: str | None = None) -> dict:
    """Export a ``NERNet`` (at its ``cfg.sensor_size``) to ONNX plus sidecar; returns the sidecar dict."""
    import torch

    out_path = Path(out_path)
    dtype = torch.float16 if fp16 else torch.float32
    model = model.eval().to(dtype)
    cfg = model.cfg
    w, h = cfg.sensor_size
    grid = torch.zeros(1, cfg.in_channels, h, w, dtype=dtype)
    state = model.initial_state(dtype=dtype)
    names = model.state_names
    torch.onnx.export(_Step.make(model), (grid, *state), str(out_path), dynamo=True, opset_version=opset,
                      input_names=["grid", *[f"{n}_in" for n in names]],
                      output_names=["image", *[f"{n}_out" for n in names]], verbose=False)
    meta = describe(model.float(), "float16" if fp16 else "float32", source)
    meta["onnx"] = {"opset": opset, "sha256": _sha256(out_path)}
    sidecar_path(out_path).write_text(json.dumps(meta, indent=1))
    return meta


def build_tensorrt(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, workspace_mib: int = 4096,
                   timing_cache: str | os.PathLike | None = None) -> dict:
    """Build a TensorRT plan from an (FP16) ONNX as a strongly typed network (TensorRT 10.x and 11.x)."""
    from .trt_engine import build_engine

    return build_engine(onnx_path, engine_path, workspace_mib=workspace_mib, timing_cache=timing_cache)


def cached_onnx(checkpoint: str | os.PathLike, sensor_size: tuple[int, int], cache_dir: str | os.PathLike | None = None,
                say=print) -> Path:
    """An ONNX export of ``checkpoint`` for ``sensor_size``, made once and kept in a cache folder
    (``$LIVENIGHT_CACHE`` or ``~/.cache/livenight``), keyed by the checkpoint's sha256 and the size."""
    from livenight.model.checkpoint import load_model

    checkpoint = Path(checkpoint)
    root = Path(cache_dir or os.environ.get("LIVENIGHT_CACHE") or Path.home() / ".cache" / "livenight")
    w, h = sensor_size
    path = root / f"{checkpoint.stem}-{_sha256(checkpoint)[:16]}-{w}x{h}.onnx"
    if path.exists() and sidecar_path(path).exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    say(f"livenight: exporting {checkpoint.name} to ONNX for {w}x{h} (once; cached in {root})")
    tmp = path.with_name(path.name + ".part.onnx")
    export_onnx(load_model(checkpoint, sensor_size), tmp, source=str(checkpoint))
    os.replace(sidecar_path(tmp), sidecar_path(path))
    os.replace(tmp, path)
    return path
