"""Simulated training data: one parameter draw per recording, deterministic in (seed, index), cached as RLED."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .config import NATURAL_GAMMA, _NAT_INT, _NAT_LOG, _NAT_RANGES, _SYN_INT, _SYN_LOG, _SYN_RANGES, NaturalConfig, SyntheticConfig
from .recordings import ArrayRecording, H5Recording, Recording


def synthetic_params(spec: SyntheticConfig, i: int):
    """``(sim_seed, NightScene, DvsParams)`` of synthetic recording ``i`` (deterministic in ``spec.seed``, ``i``)."""
    from ..simulate import DvsParams, NightScene

    ss = np.random.SeedSequence([int(spec.seed), int(i)])
    rng = np.random.default_rng(ss)
    sim_seed = int(ss.generate_state(1)[0])

    def draw(name: str):
        lo, hi = getattr(spec, name)
        if name in _SYN_INT:
            return int(rng.integers(lo, hi + 1))
        if name in _SYN_LOG:
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return float(rng.uniform(lo, hi))

    v = {name: draw(name) for name in _SYN_RANGES if name != "feature_scale"}
    speed = sorted(float(rng.uniform(*spec.object_speed_px_per_s)) for _ in range(2))
    scale = None if spec.feature_scale is None else float(rng.uniform(*spec.feature_scale))
    scene = NightScene(pan_px_per_s=v["pan_px_per_s"], pan_angle_deg=v["pan_angle_deg"], n_objects=v["n_objects"],
                       object_speed_px_per_s=(speed[0], speed[1]), headlight_emission=v["headlight_emission"],
                       feature_scale=scale, texture_density=v["texture_density"], contrast=v["contrast"])
    th_on, th_off = (float(rng.uniform(*spec.threshold)) for _ in range(2))
    dvs = DvsParams(threshold_on=th_on, threshold_off=th_off, threshold_sigma=v["threshold_sigma"],
                    refractory_us=v["refractory_us"], illuminance=v["illuminance"], tau_ref_us=v["tau_ref_us"],
                    ba_rate_hz=v["ba_rate_hz"], n_hot_pixels=v["n_hot_pixels"], hot_rate_hz=v["hot_rate_hz"])
    return sim_seed, scene, dvs


def natural_params(spec: NaturalConfig, i: int):
    """``(sim_seed, NaturalScene, DvsParams, window_us, shot_noise)`` of natural recording ``i`` (deterministic)."""
    from ..simulate import DvsParams
    from ..simulate.natural import random_natural_scene

    ss = np.random.SeedSequence([int(spec.seed), int(i)])
    rng = np.random.default_rng(ss)
    sim_seed = int(ss.generate_state(1)[0])

    def draw(name: str):
        lo, hi = getattr(spec, name)
        if name in _NAT_INT:
            return int(rng.integers(lo, hi + 1))
        if name in _NAT_LOG:
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return float(rng.uniform(lo, hi))

    v = {name: draw(name) for name in _NAT_RANGES}
    scene = random_natural_scene(rng, spec.static_fraction, spec.max_speed_px_per_s, spec.gamma)
    th_on = v["threshold"]
    th_off = th_on * v["threshold_ratio"]
    dvs = DvsParams(threshold_on=th_on, threshold_off=th_off, threshold_sigma=v["threshold_sigma"] * th_on,
                    refractory_us=v["refractory_us"], illuminance=v["illuminance"], tau_ref_us=v["tau_ref_us"],
                    ba_rate_hz=v["ba_rate_hz"], n_hot_pixels=v["n_hot_pixels"], hot_rate_hz=v["hot_rate_hz"],
                    max_step_us=2000, max_step_px=2.0)
    window_us = int(round(v["window_ms"] * 1000))
    return sim_seed, scene, dvs, window_us, v["shot_noise"]


def _simulate_one(spec, i: int, path=None):
    """Simulate recording ``i`` of a synthetic or natural spec; written to ``path`` when given."""
    if isinstance(spec, NaturalConfig):
        from ..simulate.natural import simulate_natural
        from ..simulate.night import write_sim

        sim_seed, scene, dvs, window_us, shot = natural_params(spec, i)
        sim = simulate_natural(spec.seconds, spec.size, seed=sim_seed, scene=scene, dvs=dvs, window_us=window_us,
                               shot_noise=shot)
        if path is not None:
            write_sim(path, sim)
        return sim
    from ..simulate import simulate_night, write_night

    sim_seed, scene, dvs = synthetic_params(spec, i)
    if path is not None:
        return write_night(path, spec.seconds, spec.size, seed=sim_seed, fps=spec.fps, scene=scene, dvs=dvs)
    return simulate_night(spec.seconds, spec.size, seed=sim_seed, fps=spec.fps, scene=scene, dvs=dvs)


def _synthetic_key(spec: SyntheticConfig | NaturalConfig) -> str:
    from .. import __version__

    d = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in ("count", "cache_dir")}
    if d.get("gamma") == NATURAL_GAMMA:  # added later: the caches made before it keep their names
        del d["gamma"]
    blob = json.dumps({"spec": d, "version": __version__}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def synthetic_recordings(spec: SyntheticConfig | NaturalConfig, *, write: bool = True, barrier=None, say=None,
                         progress: bool = False) -> list[Recording]:
    """Simulate ``spec.count`` recordings: in memory, or once into ``spec.cache_dir`` as RLED files (reused later).

    With a cache and several processes, only the one with ``write=True`` simulates; ``barrier()`` is called before
    the files are opened.
    """
    if spec.count == 0:
        return []
    kind = "natural" if isinstance(spec, NaturalConfig) else "night"
    indices = range(spec.count)
    if spec.cache_dir is None:
        if say:
            say(f"simulating {spec.count} synthetic {kind} recording(s) of {spec.seconds} s at "
                f"{spec.size[0]}x{spec.size[1]} in memory")
        return [ArrayRecording.from_sim(_simulate_one(spec, i), name=f"{kind}-s{spec.seed}-{i:04d}")
                for i in _bar(indices, progress, "simulating")]
    cache = Path(spec.cache_dir).expanduser()
    key = _synthetic_key(spec)
    paths = [cache / f"{kind}-{key}-{i:04d}.h5" for i in indices]
    if write:
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            cache.mkdir(parents=True, exist_ok=True)
            if say:
                say(f"simulating {len(missing)} synthetic {kind} recording(s) into {cache}")
            for i in _bar(missing, progress, "simulating"):
                tmp = paths[i].with_suffix(f".partial{os.getpid()}.h5")
                _simulate_one(spec, i, tmp)
                os.replace(tmp, paths[i])
    if barrier is not None:
        barrier()
    return [H5Recording(p) for p in paths]


def _bar(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)
