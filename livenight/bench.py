"""Benchmarks behind ``livenight bench``. Each prints its figure next to a baseline measured in the same run."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from .events import EVENT_DTYPE
from .ring import EventRing
from .synthetic import random_windows


def _packets(packet_events: int, n_packets: int, rate_ev_per_s: float = 10e6, seed: int = 0) -> list[np.ndarray]:
    """Pre-made sorted packets (so the benchmark measures ingest, not event generation)."""
    rng = np.random.default_rng(seed)
    out, t = [], 0
    for _ in range(n_packets):
        ev = np.empty(packet_events, dtype=EVENT_DTYPE)
        dt = rng.exponential(1e6 / rate_ev_per_s, packet_events)
        ev["t"] = t + np.cumsum(dt).astype(np.int64)
        t = int(ev["t"][-1]) + 1
        ev["x"] = rng.integers(0, 1280, packet_events)
        ev["y"] = rng.integers(0, 720, packet_events)
        ev["p"] = rng.integers(0, 2, packet_events)
        out.append(ev)
    return out


def _drive(push, packets: list[np.ndarray], seconds: float, consume=None) -> tuple[int, float]:
    """Push packets for ``seconds`` (cycling, with shifted timestamps) while ``consume`` runs in a thread."""
    stop = threading.Event()
    consumer = threading.Thread(target=consume, args=(stop,), daemon=True) if consume else None
    if consumer:
        consumer.start()
    span = int(packets[-1]["t"][-1]) + 1
    n_ev, lap = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for ev in packets:
            if lap:
                ev["t"] += span  # in place: the queue under test holds its own copy
            push(ev)
            n_ev += ev.shape[0]
        lap += 1
    wall = time.perf_counter() - t0
    stop.set()
    if consumer:
        consumer.join()
    return n_ev, wall


def bench_ring(seconds: float = 3.0, packet_events: int = 10_000, capacity: int = 1 << 22) -> dict[str, float]:
    """Sustained ingest of ``packet_events``-event packets into :class:`EventRing` with a live consumer reading
    40 ms windows, against a baseline ``deque`` of packet copies (the naive bounded queue)."""
    packets = _packets(packet_events, 64)
    # baseline: a bounded deque of copied packets, same bytes moved, no time index and no drop accounting
    dq: deque = deque(maxlen=max(1, capacity // packet_events))
    n_base, wall_base = _drive(lambda ev: dq.append(ev.copy()), packets, seconds)
    base_rate = n_base / wall_base

    ring = EventRing(capacity)
    windows = [0]

    def consume(stop: threading.Event) -> None:
        while not stop.is_set():
            t_end = ring.t_end_us
            if t_end is None:
                time.sleep(0.001)
                continue
            ev, i0, i1 = ring.read_time(t_end - 40_000, t_end)  # the newest 40 ms window
            ring.release(i1)
            windows[0] += 1
            time.sleep(0.001)

    n_ring, wall_ring = _drive(lambda ev: ring.push(ev), packets, seconds, consume)
    rate = n_ring / wall_ring
    print(f"ring ingest: {packet_events}-event packets, capacity {capacity}, consumer reading the newest 40 ms "
          f"window ({windows[0]} reads)")
    print(f"  EventRing      {rate / 1e6:8.1f} M events/s   dropped {ring.dropped_events} "
          f"({100 * ring.dropped_events / max(1, n_ring):.2f} %)")
    print(f"  deque baseline {base_rate / 1e6:8.1f} M events/s   (copy-only, no time index, no drop count)")
    print(f"  ratio EventRing / baseline: {rate / base_rate:.2f}x   target >= 50 M events/s: "
          f"{'met' if rate >= 50e6 else 'NOT met'}")
    return {"events_per_s": rate, "baseline_events_per_s": base_rate, "dropped": ring.dropped_events}


def bench_letc(n_events: int = 1_000_000, size: tuple[int, int] = (1280, 720), repeats: int = 5,
               seed: int = 0) -> dict[str, float]:
    """LETC lookup-table scatter against the exact per-event MLP (the official path), same events, same run."""
    import torch

    from .letc import LetcTable, exact_grid
    from .model.nernet import NERNet, NERNetConfig

    torch.manual_seed(seed)
    model = NERNet(NERNetConfig(sensor_size=size)).eval()
    rng = np.random.default_rng(seed)
    ev = np.empty(n_events, dtype=EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(10_000_000, 10_020_000, n_events))  # a 20 ms window, RLED-like times
    ev["x"] = rng.integers(0, size[0], n_events)
    ev["y"] = rng.integers(0, size[1], n_events)
    ev["p"] = rng.integers(0, 2, n_events)
    table = LetcTable.from_model(model)
    out = np.empty((size[1], size[0], 2 * model.cfg.num_bins), dtype=np.float32)
    table.grid(ev, size, out)  # compile / warm up
    fast = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        table.grid(ev, size, out)
        fast.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = exact_grid(model, ev, size)
    exact_s = time.perf_counter() - t0
    fast_s = float(np.median(fast))
    err = float(np.abs(out.transpose(2, 0, 1) - ref).max() / np.abs(ref).max())
    print(f"LETC, {n_events} events at {size[0]}x{size[1]} (uniform random positions: the cache-hostile case)")
    print(f"  lookup table   {n_events / fast_s / 1e6:8.2f} M events/s  ({fast_s * 1e3:.1f} ms, median of {repeats})")
    print(f"  exact MLP      {n_events / exact_s / 1e6:8.2f} M events/s  ({exact_s * 1e3:.1f} ms)")
    print(f"  ratio {exact_s / fast_s:.0f}x (target >= 100x); max relative error {err:.2e} (limit 1e-5)")
    return {"fast_s": fast_s, "exact_s": exact_s, "ratio": exact_s / fast_s, "rel_err": err}


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_path(engine, windows, ring_capacity: int) -> dict:
    """Ingest (ring push + read), engine (LETC + net), post-processing, write (PNG encode to memory) per window."""
    import io

    from PIL import Image

    from .render import to_uint8
    from .ring import EventRing

    ring = EventRing(ring_capacity)
    st = {"ingest": 0.0, "post": 0.0, "write": 0.0}
    lat, outs = [], []
    with engine:
        engine.step(windows[0])  # warm up (JIT, allocations); its time is not counted
        engine.reset()
        engine.stage_s = {}
        for w in windows:
            t0 = time.perf_counter()
            ring.push(w.events, w.t1_us)
            ev, _, i1 = ring.read_time(w.t0_us, w.t1_us)
            ring.release(i1)
            t1 = time.perf_counter()
            frame = engine.step(type(w)(w.index, w.t0_us, w.t1_us, ev, w.reset, 0))
            t2 = time.perf_counter()
            img = to_uint8(frame)
            t3 = time.perf_counter()
            Image.fromarray(img).save(io.BytesIO(), format="PNG", compress_level=1)
            t4 = time.perf_counter()
            st["ingest"] += t1 - t0
            st["post"] += t3 - t2
            st["write"] += t4 - t3
            lat.append(t4 - t0)
            outs.append(frame.copy())
        st.update(engine.stage_s)
    n = len(windows)
    return {"stages_ms": {k: 1e3 * v / n for k, v in st.items()}, "fps": n / sum(lat),
            "p50_ms": 1e3 * float(np.percentile(lat, 50)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
            "peak_rss_mib": _peak_rss_mib(), "outputs": outs}


def bench_model(model: str | None = None, size: tuple[int, int] = (346, 260), frames: int = 10,
                rate_ev_per_s: float = 1e6, engine: str = "auto", base_channels: int = 32,
                window_us: int = 20_000, stride_us: int = 40_000) -> dict:
    """Per-stage times of a model path against the reference path (official semantics: eager torch fp32 with the
    per-event MLP LETC), same windows, same run. Without ``model`` a random-weight NER-Net is used."""
    import tempfile

    import torch

    from livenight.engines.export import export_onnx
    from livenight.engines.ort_engine import OnnxRuntimeEngine
    from livenight.engines.torch_engine import TorchEngine

    from .model.checkpoint import load_model
    from .model.nernet import NERNet, NERNetConfig

    torch.manual_seed(0)
    if model is None:
        net = NERNet(NERNetConfig(sensor_size=size, base_channels=base_channels)).eval()
        label = f"random NER-Net (base {base_channels})"
    else:
        net = load_model(model, size)
        label = model
    windows = random_windows(frames, size, rate_ev_per_s, window_us, stride_us)  # the first has reset=True
    if engine == "auto":
        engine = "onnxruntime"
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "onnxruntime":
            path = f"{tmp}/m.onnx"
            export_onnx(_clone(net), path)
            fast = OnnxRuntimeEngine(path, size)
        else:
            fast = TorchEngine(_clone(net), size)
        ours = _run_path(fast, windows, 1 << 22)
    ref = _run_path(TorchEngine(_clone(net), size, exact_letc=True), windows, 1 << 22)
    err = max(float(np.abs(a - b).max()) for a, b in zip(ours["outputs"], ref["outputs"]))
    per = int(rate_ev_per_s * window_us / 1e6)
    print(f"bench model: {label}, {size[0]}x{size[1]}, {frames} windows of {window_us / 1e3:g} ms at "
          f"{rate_ev_per_s / 1e6:g} M events/s ({per} events each); engine {fast.info.backend} vs reference "
          f"(eager torch fp32, per-event MLP LETC)")
    print(f"  {'stage':<22}{'ours ms':>10}{'reference ms':>15}{'ratio':>9}")
    for k in ("ingest", "represent", "net", "postprocess", "post", "write"):
        a, b = ours["stages_ms"].get(k, 0.0), ref["stages_ms"].get(k, 0.0)
        print(f"  {k:<22}{a:10.2f}{b:15.2f}{(b / a if a > 0 else float('nan')):9.2f}x")
    outside = sum(v for k, v in ours["stages_ms"].items() if k != "net")
    print(f"  {'outside the network':<22}{outside:10.2f}")
    for k, label_ in (("fps", "frames/s"), ("p50_ms", "latency p50 ms"), ("p99_ms", "latency p99 ms")):
        a, b = ours[k], ref[k]
        ratio = a / b if k == "fps" else b / a
        print(f"  {label_:<22}{a:10.2f}{b:15.2f}{ratio:9.2f}x")
    print(f"  {'peak RSS MiB (process)':<22}{ours['peak_rss_mib']:10.0f}{ref['peak_rss_mib']:15.0f}")
    print(f"  max |ours - reference| over all frames: {err:.2e} (limit 1e-4)")
    if torch.cuda.is_available():
        print("  (CUDA present: run with --engine torch --device cuda for GPU figures)")
    return {"ours": ours, "reference": ref, "max_abs_diff": err}


def _clone(net):
    import copy

    return copy.deepcopy(net)


# ----------------------------------------------------------------------------------------------- CPU fast path
def data_dir():
    """The real recordings: ``$LIVENIGHT_DATA``, else ``../shared/data`` beside the repository."""
    import os
    from pathlib import Path

    return Path(os.environ.get("LIVENIGHT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def recorded_windows(n: int, size: tuple[int, int] = (346, 260), window_us: int = 20_000, stride_us: int = 40_000,
                     path=None) -> tuple[list, str]:
    """``n`` windows of real events (``davis346.aedat4`` from :func:`data_dir`, when it is there and ``size`` is its
    346x260), else simulated uniform events at 1 M events/s; returns ``(windows, description)``.

    Timestamps are taken relative to the first event: the recording's are Unix-epoch µs, which float32 seconds
    cannot resolve within a window.
    """
    from .windowing import Window

    path = data_dir() / "davis346.aedat4" if path is None else path
    if tuple(size) == (346, 260) and path.is_file():
        try:
            from livenight.drivers import open_source

            with open_source(str(path)) as src:
                ev = np.concatenate([p.events for p in src])
        except ImportError:
            ev = None
        if ev is not None and ev.size:
            ev = ev.copy()
            ev["t"] -= int(ev["t"][0])
            out = []
            for k in range(n):  # cycle through the 2.4 s recording when more windows are asked for
                span = int(ev["t"][-1]) // stride_us * stride_us
                t0 = (k * stride_us) % max(stride_us, span)
                a, b = np.searchsorted(ev["t"], [t0, t0 + window_us])
                w = ev[a:b].copy()
                w["t"] += k * stride_us - t0
                out.append(Window(k, k * stride_us, k * stride_us + window_us, w, k == 0, 0))
            return out, f"{path.name}, {window_us / 1e3:g} ms windows every {stride_us / 1e3:g} ms"
    return (random_windows(n, size, 1e6, window_us, stride_us),
            f"simulated uniform events, 1 M events/s, {window_us / 1e3:g} ms windows")


def family_grids(net, wins, size) -> list:
    """The network inputs ``[1, C, H, W]`` (float32 tensors) of ``wins``, through its family's representation (built
    from the float32 weights, before anything is converted)."""
    import torch

    from . import families

    rep = families.family_of(net).representation(net)
    grids = []
    for w in wins:
        x = rep(w.events, size, np.zeros((net.cfg.in_channels, size[1], size[0]), dtype=np.float32))
        grids.append(torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(0))
    return grids


def _bf16_state(net):
    """The bf16 CPU path with the whole recurrent state rounded to bf16 after every step (for comparison only)."""
    import torch

    def step(grid, state):
        img, state = net(grid, state)
        return img, tuple(s.to(torch.bfloat16).to(s.dtype) for s in state)

    step.initial_state = net.initial_state
    return step


def bench_cpu(model: str | None = None, size: tuple[int, int] = (346, 260), windows: int = 40,
              threads: int | None = None, base_channels: int = 32, state_variant: bool = True) -> dict:
    """fp32 (the exact path) against the bf16 CPU path on the same recurrent sequence of real windows, stepped in
    turns so machine load hits both alike: ms/frame and parity (p99.9 and max |Δ| in grey levels, over all pixels
    of all frames, unclipped and after the uint8 conversion)."""
    import torch

    from . import families
    from .cpu import cpu_features, describe_cpu_path, fast_cpu_dtype, prepare_cpu_model
    from .render import to_uint8
    from .model.nernet import NERNet, NERNetConfig

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    window_us, stride_us = 20_000, 40_000  # NER-Net's RLED windows at 25 frames/s
    if model is None:
        net = NERNet(NERNetConfig(sensor_size=size, base_channels=base_channels)).eval()
        label = f"random-weight NER-Net (base {base_channels})"
    else:  # any registered family; the model's own windows when its JSON names them
        from livenight.engines import model_meta

        net = families.load(model, size)[1].eval()
        label = str(model)
        win = (model_meta(model) or {}).get("windows") or {}
        if win.get("kind") == "time":
            window_us, stride_us = int(win["window_us"]), int(win["stride_us"])
    wins, where = recorded_windows(windows, size, window_us, stride_us)
    grids = family_grids(net, wins, size)
    bf16 = prepare_cpu_model(net, "bfloat16")
    paths = {"fp32": net, "bf16": bf16}
    if state_variant:
        paths["bf16, state bf16"] = _bf16_state(bf16)
    states = {k: (p.initial_state() if hasattr(p, "initial_state") else net.initial_state()) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    outs: dict[str, list[np.ndarray]] = {k: [] for k in paths}
    with torch.inference_mode():
        for g in grids:
            for k, p in paths.items():
                t0 = time.perf_counter()
                img, states[k] = p(g, states[k])
                times[k].append(time.perf_counter() - t0)
                outs[k].append(img[0, 0].float().numpy().copy())
    feats = cpu_features()
    print(f"bench cpu: {label}, {size[0]}x{size[1]}, {windows} recurrent windows ({where}); "
          f"{torch.get_num_threads()} torch threads; CPU bf16 unit: {feats.bf16_unit or 'none'} "
          f"(fast_cpu_dtype: {fast_cpu_dtype(feats)}, {describe_cpu_path(fast_cpu_dtype(feats), feats)})")
    ref = np.stack(outs["fp32"])
    ref_u8 = to_uint8(ref).astype(np.int16)
    base_ms = 1e3 * float(np.median(times["fp32"][1:]))
    base_min_ms = 1e3 * min(times["fp32"][1:])
    result = {"label": label, "windows": windows, "paths": {}}
    print(f"  {'path':<18}{'median ms':>10}{'min ms':>9}{'speed-up':>9}{'(min)':>7}{'p99.9 |d| (levels)':>20}{'max':>8}"
          f"{'uint8 p99.9':>12}{'max':>5}{'last frame p99.9':>18}")
    for k in paths:
        o = np.stack(outs[k])
        d = np.abs(o - ref) * 255.0
        du = np.abs(to_uint8(o).astype(np.int16) - ref_u8)
        med = 1e3 * float(np.median(times[k][1:]))
        row = {"median_ms": med, "min_ms": 1e3 * min(times[k][1:]), "speedup": base_ms / med,
               "speedup_min": base_min_ms / (1e3 * min(times[k][1:])),
               "p999_levels": float(np.percentile(d, 99.9)), "max_levels": float(d.max()),
               "u8_p999": float(np.percentile(du, 99.9)), "u8_max": int(du.max()),
               "last_p999": float(np.percentile(d[-1], 99.9))}
        result["paths"][k] = row
        print(f"  {k:<18}{med:10.1f}{row['min_ms']:9.1f}{row['speedup']:8.2f}x{row['speedup_min']:6.2f}x"
              f"{row['p999_levels']:20.3f}"
              f"{row['max_levels']:8.3f}{row['u8_p999']:12.0f}{row['u8_max']:5d}{row['last_p999']:18.3f}")
    print(f"  output range of the fp32 frames: {ref.min():.3f} .. {ref.max():.3f} (target: bf16 p99.9 <= 2 levels)")
    return result


# ----------------------------------------------------------------------------------------------- threads
def _threads_child(budget: bool, model: str, frames: int, size: tuple[int, int]) -> None:
    """Run in a fresh interpreter (the thread pools and OpenMP's wait policy are fixed when torch loads): step the
    torch engine over ``frames`` recorded windows and print one JSON line with frames/s."""
    import json

    if budget:
        from .cpu import configure_threads

        configure_threads()
    import torch

    from livenight.engines.torch_engine import TorchEngine

    wins, _ = recorded_windows(frames + 2, size)
    with TorchEngine(model, size) as eng:
        for w in wins[:2]:  # warm-up: allocations, numba
            eng.step(w)
        t0 = time.perf_counter()
        for w in wins[2:]:
            eng.step(w)
        wall = time.perf_counter() - t0
    print(json.dumps({"fps": frames / wall, "threads": torch.get_num_threads()}))


def _busy_job(cores: int) -> list:
    """A competing CPU job: one spinning process per core (pure Python, no I/O)."""
    import subprocess
    import sys

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]


def bench_threads(model: str | None = None, size: tuple[int, int] = (346, 260), frames: int = 20) -> dict:
    """The bundled model's frames/s idle and with a competing CPU job on every core, with livenight's thread budget
    and with torch's defaults; each run in a fresh process so each gets its own thread pools."""
    import json
    import os
    import subprocess
    import sys

    from .cpu import available_cores, plan_threads

    if model is None:
        from livenight.engines import bundled_model

        model = str(bundled_model())
    cores = available_cores()
    code = "import sys; from livenight.bench import _threads_child; _threads_child({b}, {m!r}, {f}, {s!r})"

    def run(budget: bool) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                                                                 "NUMBA_NUM_THREADS", "LIVENIGHT_THREADS")}
        out = subprocess.run([sys.executable, "-c", code.format(b=budget, m=model, f=frames, s=tuple(size))],
                             capture_output=True, text=True, env=env, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"bench threads: the child failed: {out.stderr.strip().splitlines()[-1:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    load_before = os.getloadavg()[0]
    res: dict = {}
    for label, budget in (("torch default", False), ("livenight budget", True)):
        idle = run(budget)
        procs = _busy_job(cores)
        try:
            time.sleep(0.5)
            busy = run(budget)
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()
        res[label] = {"idle_fps": idle["fps"], "busy_fps": busy["fps"], "threads": idle["threads"],
                      "kept": busy["fps"] / idle["fps"]}
    print(f"bench threads: {Path(model).name} via the torch engine, {size[0]}x{size[1]}, {frames} recorded windows "
          f"per run; {cores} cores; competing job: {cores} spinning processes; load average before: {load_before:.1f}")
    print(f"  {'threads':<18}{'torch threads':>14}{'idle fps':>10}{'busy fps':>10}{'kept':>8}")
    for label, r in res.items():
        print(f"  {label:<18}{r['threads']:>14d}{r['idle_fps']:10.1f}{r['busy_fps']:10.1f}{100 * r['kept']:7.0f}%")
    gain = res["livenight budget"]["busy_fps"] / res["torch default"]["busy_fps"]
    print(f"  under load: budget / default {gain:.2f}x; budget keeps {100 * res['livenight budget']['kept']:.0f}% of "
          f"its idle rate (target >= 50%); plan: {plan_threads().describe()}")
    res["busy_ratio_budget_vs_default"] = gain
    return res


# ----------------------------------------------------------------------------------------------- end to end
def bench_pipeline(path: str | None = None, backends: tuple[str, ...] = ("torch", "onnxruntime", "complementary"),
                   model: str | None = None, seconds: float = 2.0) -> dict:
    """End to end, offline: an RLED ``.h5`` file → windows (the engine's default policy) → engine → PNG files, in
    frames/s, against two baselines from the same run on the same file: the same pipeline with frames discarded
    (no PNG encoding) and the engine alone (its own time per frame). Without ``path`` a night of ``seconds`` at
    346x260 is simulated first (seed 7)."""
    import tempfile

    from livenight.drivers import open_source
    from livenight.engines import open_engine

    from .pipeline import Pipeline
    from .sinks import NullSink, PngSink

    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            from .simulate import write_night

            path = f"{tmp}/night.h5"
            write_night(path, seconds=seconds, size=(346, 260), seed=7)
            where = f"simulated night, {seconds:g} s at 346x260 (seed 7)"
        else:
            where = str(path)

        def run(engine, sink) -> tuple:
            with open_source(path) as src:
                policy = engine.default_windows(getattr(src, "event_indices", None))
                stats = Pipeline(src, src.sensor_size, engine, policy, [sink]).run()
            return stats, policy

        with open_source(path) as src:
            size = src.sensor_size
        for backend in backends:
            engine = open_engine(None if backend == "complementary" else model, size, backend=backend,
                                 say=lambda *a: None)
            with engine:
                run(engine, NullSink())  # warm-up: numba, allocations, the ONNX export cache
                png, policy = run(engine, PngSink(f"{tmp}/png-{backend}"))
                null, _ = run(engine, NullSink())
            fps = png.frames / png.wall_s
            r = {"frames": png.frames, "fps_png": fps, "fps_null": null.frames / null.wall_s,
                 "fps_engine": null.frames / null.engine_s if null.engine_s > 0 else float("inf"),
                 "engine": f"{engine.info.backend} {engine.info.name[:22]}", "window": type(policy).__name__}
            res[backend] = r
    print(f"bench pipeline: {where}; file → windows → engine → sink, offline (one thread, lossless)")
    print(f"  {'engine':<34}{'frames':>7}{'PNG fps':>9}{'no-sink fps':>13}{'engine-only fps':>17}{'PNG/engine':>12}")
    for r in res.values():
        print(f"  {r['engine']:<34}{r['frames']:7d}{r['fps_png']:9.1f}{r['fps_null']:13.1f}{r['fps_engine']:17.1f}"
              f"{r['fps_png'] / r['fps_engine']:11.2f}x")
    return res


# ----------------------------------------------------------------------------------------------- GPU
#: dense tensor-core peaks (TFLOP/s: fp16/bf16, tf32, plain fp32 FMA) from NVIDIA's data sheets; first match wins
GPU_PEAK_TFLOPS = (("H200", (989.0, 494.0, 67.0)), ("H100 PCIe", (756.0, 378.0, 51.0)), ("H100", (989.0, 494.0, 67.0)),
                   ("A100", (312.0, 156.0, 19.5)), ("L40S", (362.0, 183.0, 91.6)), ("L4", (121.0, 60.0, 30.0)),
                   ("A10", (125.0, 62.5, 31.2)), ("RTX 4090", (165.0, 82.6, 82.6)))


def gpu_peak_tflops(name: str) -> tuple[float, float, float] | None:
    for key, peaks in GPU_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peaks
    return None


def conv_flops(net, x, state) -> float:
    """FLOPs of one forward step, counted over every convolution (2 per multiply-add; the rest is negligible)."""
    import torch

    total = [0.0]

    def hook(mod, inp, out):
        k = mod.weight[0].numel()  # in_channels / groups × kernel area
        total[0] += 2.0 * out.numel() * k

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                     torch.nn.ConvTranspose2d))]
    try:
        with torch.inference_mode():
            net(x, state)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def _driver_version() -> str:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return "unknown"
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                         text=True, timeout=30)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


class _GraphStep:
    """One recurrent step captured as a CUDA graph: static input and state, the new state copied back in-graph."""

    def __init__(self, net, x, state):
        import torch

        self.x = x.clone()
        self.state = tuple(s.clone() for s in state)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):  # warm-up on a side stream before capture (cuDNN picks its algorithms here)
                net(self.x, self.state)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.image, new_state = net(self.x, self.state)
            for s, n in zip(self.state, new_state):
                s.copy_(n)

    def __call__(self, x):
        self.x.copy_(x)
        self.graph.replay()
        return self.image


def _time_steps(step, x, n: int) -> float:
    """Seconds per step over ``n`` steps, timed with CUDA events (one synchronisation at the end)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        step(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / n


def bench_gpu(sizes: tuple[tuple[int, int], ...] = ((346, 260), (1280, 720)), steps: int = 50,
              parity_steps: int = 20, include_exported: bool = True) -> dict:
    """The GPU check in one command: torch fp32 / fp16 / bf16, each with and without a CUDA graph, for NER-Net
    (official size, random weights) and the bundled model at each size: frames/s and the fraction of the GPU's dense
    peak; fp16 and bf16 against fp32 (TF32 off) over ``parity_steps`` recurrent steps of real windows; ONNX
    Runtime's CUDA provider and TensorRT (FP16, with and without CUDA graphs) when installed. Prints as it goes."""
    import copy

    import torch

    if not torch.cuda.is_available():
        print(f"bench gpu: no CUDA device here (torch {torch.__version__}); nothing to measure")
        return {}
    from livenight.engines import bundled_model

    from . import families
    from .model.nernet import NERNet, NERNetConfig

    t_start = time.perf_counter()
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name()
    peaks = gpu_peak_tflops(name)
    torch.backends.cudnn.benchmark = True
    print(f"bench gpu: {name}, driver {_driver_version()}, CUDA {torch.version.cuda}, torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}; dense peak fp16/tf32/fp32: "
          f"{'/'.join(f'{p:g}' for p in peaks) + ' TFLOP/s' if peaks else 'unknown (fractions not shown)'}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    bundled = bundled_model()

    def build(which: str, size):
        torch.manual_seed(0)
        if which == "NER-Net":
            return NERNet(NERNetConfig(sensor_size=size)).eval()
        return families.load(bundled, size)[1].eval()

    models = ["NER-Net"] + ([bundled.stem] if bundled is not None else [])
    res: dict = {"gpu": name, "cases": [], "parity": [], "exported": []}
    print("  float32 convolutions run as TF32 (torch's default), so their fraction is of the TF32 peak", flush=True)
    print(f"  {'model':<9}{'size':>10}{'dtype':>10}{'graph':>7}{'ms/frame':>10}{'frames/s':>10}{'GFLOP/frame':>13}"
          f"{'TFLOP/s':>9}{'of peak':>9}", flush=True)
    for which in models:
        for size in sizes:
            base = build(which, size)
            w, h = size
            x32 = torch.rand(1, base.cfg.in_channels, h, w, device=dev) * (torch.rand(1, 1, h, w, device=dev) < 0.05)
            flops = conv_flops(base.to(dev), x32, base.initial_state(device=dev))
            for dtype_name, dtype, peak_i in (("float32", torch.float32, 1), ("float16", torch.float16, 0),
                                              ("bfloat16", torch.bfloat16, 0)):
                net = copy.deepcopy(base).to(dev, dtype)
                fmt = torch.channels_last if dtype != torch.float32 else torch.contiguous_format
                net = net.to(memory_format=fmt)
                x = x32.to(dtype).contiguous(memory_format=fmt)
                for graph in (False, True):
                    state = [net.initial_state(device=dev, dtype=dtype)]
                    if graph:
                        step = _GraphStep(net, x, state[0])
                    else:
                        def step(inp, net=net, state=state):
                            with torch.inference_mode():
                                img, state[0] = net(inp, state[0])
                            return img
                        for _ in range(3):
                            step(x)
                    s = _time_steps(step, x, steps)
                    tflops = flops / s / 1e12
                    frac = f"{100 * tflops / peaks[peak_i]:8.1f}%" if peaks else f"{'n/a':>9}"
                    row = {"model": which, "size": list(size), "dtype": dtype_name, "graph": graph, "ms": 1e3 * s,
                           "fps": 1 / s, "gflop": flops / 1e9, "tflops": tflops}
                    res["cases"].append(row)
                    print(f"  {which:<9}{f'{w}x{h}':>10}{dtype_name:>10}{'yes' if graph else 'no':>7}{1e3 * s:10.2f}"
                          f"{1 / s:10.1f}{flops / 1e9:13.1f}{tflops:9.1f}{frac}", flush=True)
                del net
            torch.cuda.empty_cache()
    # parity: fp16 / bf16 against true fp32 (TF32 off) over recurrent steps of real windows
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    print(f"  parity over {parity_steps} recurrent steps (max |Δ| per frame vs fp32 without TF32; target fp16 <= 1e-2):",
          flush=True)
    try:
        for which in models:
            size = sizes[0]
            base = build(which, size)
            wins, where = recorded_windows(parity_steps, size)
            grids = family_grids(base, wins, size)
            outs = {}
            for dtype_name, dtype in (("float32", torch.float32), ("float16", torch.float16),
                                      ("bfloat16", torch.bfloat16)):
                net = copy.deepcopy(base).to(dev, dtype)
                state = net.initial_state(device=dev, dtype=dtype)
                o = []
                with torch.inference_mode():
                    for g in grids:
                        img, state = net(g.to(dev, dtype), state)
                        o.append(img.float().cpu().numpy()[0, 0])
                outs[dtype_name] = np.stack(o)
            for dtype_name in ("float16", "bfloat16"):
                d = np.abs(outs[dtype_name] - outs["float32"]).reshape(parity_steps, -1).max(axis=1)
                res["parity"].append({"model": which, "dtype": dtype_name, "max": float(d.max()),
                                      "last": float(d[-1])})
                print(f"    {which:<9}{f'{size[0]}x{size[1]}':>10}{dtype_name:>10}  max {d.max():.2e}  last step "
                      f"{d[-1]:.2e}  ({where})", flush=True)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    if include_exported:
        _bench_gpu_exported(res, sizes, steps, build)
    print(f"  bench gpu took {time.perf_counter() - t_start:.0f} s", flush=True)
    return res


def _bench_gpu_exported(res: dict, sizes, steps: int, build) -> None:
    """ONNX Runtime (CUDA provider) and TensorRT FP16 for NER-Net, when installed; frames/s through the engines
    (representation on the CPU included) and max |Δ| against torch fp32 over the same windows."""
    import tempfile

    from livenight._optional import has

    ort_cuda = False
    if has("onnxruntime"):
        import onnxruntime as ort

        ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    trt = has("tensorrt")
    if not (ort_cuda or trt):
        print("  ONNX Runtime CUDA provider: not installed; TensorRT: not installed", flush=True)
        return
    from livenight.engines.export import build_tensorrt, export_onnx
    from livenight.engines.torch_engine import TorchEngine

    for size in sizes[-1:]:  # the largest size only: exports and TensorRT builds take minutes
        base = build("NER-Net", size)
        wins, _ = recorded_windows(steps, size)
        with TorchEngine(_clone(base), size, device="cuda") as ref_eng:
            ref = [ref_eng.step(w).copy() for w in wins]
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            if ort_cuda:
                from livenight.engines.ort_engine import OnnxRuntimeEngine

                export_onnx(_clone(base), f"{tmp}/f32.onnx")
                runs.append(("onnxruntime CUDA fp32", lambda: OnnxRuntimeEngine(f"{tmp}/f32.onnx", size,
                                                                                providers=["CUDAExecutionProvider"])))
            if trt:
                from livenight.engines.trt_engine import TensorRTEngine

                t0 = time.perf_counter()
                export_onnx(_clone(base), f"{tmp}/f16.onnx", fp16=True)
                build_tensorrt(f"{tmp}/f16.onnx", f"{tmp}/f16.engine")
                print(f"    TensorRT build {size[0]}x{size[1]}: {time.perf_counter() - t0:.0f} s", flush=True)
                for graphs in (False, True):
                    runs.append((f"TensorRT fp16{' + graphs' if graphs else ''}",
                                 lambda g=graphs: TensorRTEngine(f"{tmp}/f16.engine", size, cuda_graphs=g)))
            for label, make in runs:
                with make() as eng:
                    eng.step(wins[0])
                    eng.reset()
                    outs, t0 = [], time.perf_counter()
                    for w in wins:
                        outs.append(eng.step(w).copy())
                    fps = len(wins) / (time.perf_counter() - t0)
                err = max(float(np.abs(a - b).max()) for a, b in zip(outs, ref))
                res["exported"].append({"engine": label, "size": list(size), "fps": fps, "max_abs_vs_fp32": err})
                print(f"    {label:<24}{f'{size[0]}x{size[1]}':>10}{fps:10.1f} frames/s end to end (CPU LETC "
                      f"included)  max |Δ| vs torch fp32 {err:.2e}", flush=True)
