"""The JSON sidecar beside every exported engine (``model.onnx.json``, ``model.engine.json``).

Why it exists: an exported graph starts after the input representation and ends before the post-processing
(both are family code in numpy), and knows nothing of the sensor it was built for. The sidecar carries all of
that: the family block (name, config, representation parameters such as LETC's MLP weights, post-processing
options), sizes, padding, dtype, the I/O names and shapes, the model's default windows, and hashes of the source
checkpoint and of the exported file itself (graph *and* weights: the export is one self-contained file).
Engines read it with :func:`read_sidecar` and refuse, in one sentence that says how to rebuild, a file that does
not fit the source (:func:`check_sidecar`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from livenight.errors import EngineMismatchError, SourceError

SIDECAR_FORMAT = "livenight-engine/2"


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
                                  f"'livenight export MODEL --onnx {Path(path).name}' (this livenight version)")
    return meta


def check_sidecar(meta: dict, path: str | os.PathLike, sensor_size: tuple[int, int]) -> None:
    """Fail early, in one sentence, when an exported engine does not fit the source."""
    w, h = (int(v) for v in sensor_size)
    ew, eh = meta["sensor_size"]
    if (ew, eh) != (w, h):
        pw, ph = meta["padded_size"]
        raise EngineMismatchError(
            f"{Path(path).name} expects {meta['input']['shape'][1]} input channels at {pw}x{ph} ({ew}x{eh} padded); "
            f"the source is {w}x{h}. Rebuild with 'livenight export MODEL --onnx {Path(path).name} --size {w}x{h}'")


def check_file_hash(meta: dict, path: str | os.PathLike, key: str = "onnx") -> None:
    """The exported file must be the one the sidecar describes (a re-export without its sidecar, a copy of
    another model's weights)."""
    want = (meta.get(key) or {}).get("sha256")
    if want and sha256_of(path) != want:
        raise EngineMismatchError(f"{path}: the file does not match its sidecar {sidecar_path(path).name} (sha256 "
                                  "differs); export it again")


def family_parts(meta: dict):
    """``(family, representation, postprocess)`` rebuilt from a sidecar's family block."""
    from livenight import families

    block = meta["family"]
    family = families.get(block["name"])
    config = dict(block["config"])
    return (family, family.representation_from_json(block["representation"]),
            family.postprocess_from_json(config, block.get("postprocess", {})))
