"""The ``livenight`` command line.

``livenight --replay FILE`` / ``livenight --camera NAME`` run the pipeline; subcommands do the rest
(``demo``, ``simulate``, ``info``, ``bench``). Every command is ``parse_args(argv) -> run(args) -> main()``.
Errors print one line (``livenight: error: …``) and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path

from . import __version__, argtypes
from .errors import LivenightError
from .engines import BACKENDS

DESCRIPTION = """\
Real-time night vision from event cameras: reconstruct intensity video from a recording or a camera.

commands:
  livenight --replay FILE [options]   reconstruct a recording (.h5 RLED, .aedat4, .raw, .dat)
  livenight --camera NAME [options]   reconstruct live (davis346, evk4, tcp://HOST:PORT, …)
  livenight demo                      simulate a short night clip and reconstruct it (no downloads)
  livenight simulate --out night.h5   write a simulated night recording (RLED layout, with ground truth)
  livenight info FILE                 describe a recording
  livenight record --camera X --out F record any source to an RLED .h5
  livenight devices | doctor          connected cameras | what can run here and what to install
  livenight ets IN.h5 OUT.h5          event trail suppression (NER-Net's ETS), streaming
  livenight eval FILE… [--model M]    score reconstructions against reference frames (MSE, SSIM)
  livenight train CONFIG              train a NER-Net-family model (configs/ner-tiny.toml); prepare DIR: memmaps
  livenight export MODEL --onnx F     export NER-Net to ONNX (and --engine F for TensorRT)
  livenight bench ring|letc|model     benchmarks, each against a baseline run in the same process
Run 'livenight COMMAND --help' for a command's options.
"""


_size = argtypes.size
_positive_int = argtypes.positive_int


def _add_run_options(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--no-gui", action="store_true", help="never open a window (default when no display exists)")
    out.add_argument("--out", metavar="DIR", help="write DIR/frame_00000.png … (8-bit grey reconstructions)")
    out.add_argument("--save-gt", action="store_true",
                     help="also write DIR/gt/frame_*.png: the recording's reference frame for each output")
    out.add_argument("--save-evframe", action="store_true",
                     help="also write DIR/events/evs_*.png: each window's events (ON red, OFF blue)")
    out.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames")
    out.add_argument("--video", metavar="FILE.mp4",
                     help="record an MP4 (H.264 via PyAV): without a window, every frame; with a window, what is "
                          "shown (V toggles recording)")
    out.add_argument("--display", choices=("fixed", "auto"), default="fixed",
                     help="intensity mapping for the window and --video: fixed [0,1] as in the PNG files (default), "
                          "or auto-exposure (robust percentiles, smoothed over time)")
    out.add_argument("--gamma", type=float, default=1.0, help="display gamma for the window and --video (default 1)")
    out.add_argument("--overlay", action="store_true",
                     help="burn the status line (events/s, frames/s, latency, drops) into --video")
    pace = p.add_argument_group("replay")
    pace.add_argument("--speed", type=float, metavar="X",
                      help="replay at X times real time; 0 = as fast as possible (default: 1 with a window, "
                           "0 when only writing files)")
    pace.add_argument("--ts-unit", choices=("auto", "us", "s"), default="auto",
                      help="unit of events/ts in .h5 files (default: detect; integral values spanning > 10 ms "
                           "are µs)")
    win = p.add_argument_group("windows")
    win.add_argument("--windows", choices=("auto", "time", "count", "rled"), default="auto",
                     help="how events are cut into frames: fixed time, fixed count, or the RLED protocol "
                          "(event_indices, ±10 ms around each image). auto: what the engine needs (the "
                          "classical filter integrates every event, so it uses contiguous time windows)")
    win.add_argument("--window-ms", type=float, metavar="MS",
                     help="time window length in milliseconds (default: 20 with --model, the RLED protocol; "
                          "40 for the classical filter)")
    win.add_argument("--stride-ms", type=float, metavar="MS",
                     help="time between window starts in milliseconds (default: 40 with --model, i.e. 25 frames/s; "
                          "the window length for the classical filter)")
    win.add_argument("--window-events", type=_positive_int, default=50_000, metavar="N",
                     help="events per window with --windows count (default 50000)")
    win.add_argument("--max-gap-ms", type=float, metavar="MS",
                     help="an event gap longer than this resets the recurrent state (default 1000; never with "
                          "--windows rled, which like the official inference resets only per file)")
    eng = p.add_argument_group("engine")
    eng.add_argument("--model", metavar="FILE",
                     help="a checkpoint of any supported family, recognised from its content (.pth/.pt/.pth.tar: the "
                          "official NER-Net ner.pth, E2VID / E2VID+ / FireNet / FireNet+, a livenight checkpoint), or "
                          "an exported .onnx / TensorRT .engine (see 'livenight export'). Default: the bundled model")
    eng.add_argument("--engine", choices=BACKENDS, default="auto",
                     help="backend (default auto: the fastest that works here for the model; .onnx runs on ONNX "
                          "Runtime, .engine/.plan on TensorRT; onnxruntime with a checkpoint exports it once and "
                          "caches it). complementary: a classical high-pass filter on log intensity, no weights")
    eng.add_argument("--device", default="cpu", help="torch device for --model: cpu, cuda, cuda:1 … (default cpu)")
    eng.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                     help="network precision for --model (float16/bfloat16 need CUDA; default float32)")
    eng.add_argument("--exact-letc", action="store_true",
                     help="compute LETC with the per-event MLP (the official path; slow) instead of the lookup table")
    crop = eng.add_mutually_exclusive_group()
    crop.add_argument("--keep-padding", dest="keep_padding", action="store_true", default=None,
                      help="keep the network's padding in the frames (the official NER-Net output is padded to "
                           "multiples of 8; default: frames at the sensor size)")
    crop.add_argument("--crop", dest="keep_padding", action="store_false",
                      help="frames at the sensor size (the default)")
    eng.add_argument("--cuda-graphs", action="store_true",
                     help="TensorRT: replay each step as a CUDA graph (fixed shapes; lower launch overhead)")
    eng.add_argument("--cutoff-hz", type=float, default=1.0,
                     help="complementary filter: high-pass cut-off in Hz (default 1.0)")
    eng.add_argument("--contrast", type=float, default=0.2,
                     help="complementary filter: log-intensity step per event (default 0.2)")
    eng.add_argument("--log-range", type=float, default=1.5,
                     help="complementary filter: log units shown as full white / black (default 1.5)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"livenight {__version__}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--replay", metavar="FILE",
                     help="recording to replay: .h5/.hdf5 (RLED layout), .aedat4 (iniVation), .raw (Prophesee "
                          "EVT 2.0/2.1/3.0), .dat (Prophesee DAT)")
    src.add_argument("--camera", metavar="NAME",
                     help="live source: davis346, dvxplorer, davis://SERIAL, evk4, prophesee://SERIAL, tcp://HOST:PORT")
    _add_run_options(p)
    return p


# ---------------------------------------------------------------------------- run (replay / camera)
def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _engine(args, sensor_size):
    """The one call that picks and builds the engine (livenight.engines.open_engine owns every default)."""
    from livenight.engines import open_engine

    options = {}
    if args.engine == "complementary":
        options = {"cutoff_hz": args.cutoff_hz, "contrast_on": args.contrast, "contrast_off": args.contrast,
                   "log_range": args.log_range}
    return open_engine(args.model, sensor_size, backend=args.engine, device=args.device, dtype=args.dtype,
                       crop=not args.keep_padding, exact=args.exact_letc,
                       cuda_graphs=args.cuda_graphs, say=_say, **options)


def _policy(args, source, engine):
    """--windows auto: what the engine's model was trained with; explicit options override it."""
    from .windowing import CountWindows, RledWindows, TimeWindows

    indices = getattr(source, "event_indices", None)
    default = engine.default_windows(indices)
    kind = args.windows
    if kind == "auto":
        if args.window_ms is None and args.stride_ms is None:
            return default
        kind = "time"
    if kind == "rled":
        if indices is None:
            raise LivenightError(f"--windows rled needs a recording with an 'event_indices' dataset; "
                                 f"{args.replay or args.camera} has none (use --windows time)")
        return RledWindows(indices)
    if kind == "count":
        return CountWindows(args.window_events)
    base_w = getattr(default, "window_us", 20_000)  # an RLED default means ±10 ms windows at 25 frames/s
    base_s = getattr(default, "stride_us", 40_000)
    window_us = round(args.window_ms * 1000) if args.window_ms is not None else base_w
    stride_us = round(args.stride_ms * 1000) if args.stride_ms is not None else (
        window_us if base_w == base_s else base_s)
    if window_us <= 0 or stride_us <= 0:
        raise LivenightError(f"--window-ms and --stride-ms must be positive (got {args.window_ms}, {args.stride_ms})")
    return TimeWindows(window_us, stride_us)


def _max_gap_us(args) -> int | None:
    return None if args.max_gap_ms is None else round(args.max_gap_ms * 1000)


def run_pipeline_command(args) -> int:
    from tqdm import tqdm

    from livenight.drivers import open_source
    from livenight.drivers.pacing import paced

    from .pipeline import Pipeline
    from .sinks import PngSink

    uri = args.replay or args.camera
    gui = False
    if not args.no_gui:
        from .viewer.platform_check import check_display

        gui, why = check_display(probe=True)
        if not gui:
            print(f"livenight: cannot open a window: {why}; running headless"
                  + ("" if args.out or args.video else " (use --out DIR or --video FILE to keep frames)"),
                  file=sys.stderr)
    speed = args.speed if args.speed is not None else (1.0 if gui else 0.0)
    if speed < 0:
        raise LivenightError(f"--speed must be >= 0 (0 = as fast as possible; got {speed:g})")
    options = {"ts_unit": args.ts_unit} if Path(uri).suffix.lower() in (".h5", ".hdf5") else {}
    with open_source(uri, **options) as source, _engine(args, source.sensor_size) as engine:
        live = bool(getattr(source, "is_live", False))
        stream = source if live or speed == 0 else paced(source, speed)
        policy = _policy(args, source, engine)
        print(f"livenight: {engine.info.name} ({engine.info.backend} {engine.info.device} {engine.info.dtype}), "
              f"{policy.describe()}")
        sinks = [PngSink(args.out, save_gt=args.save_gt, save_evframe=args.save_evframe)] if args.out else []
        if args.save_gt and getattr(source, "frames", None) is None:
            print(f"livenight: {uri} has no reference frames; --save-gt writes nothing", file=sys.stderr)
        video = None
        if args.video and not gui:
            from .viewer.display import DisplayMapper
            from .sinks.video import VideoSink

            stride_us = getattr(policy, "stride_us", 40_000)
            video = VideoSink(args.video, fps=1e6 / stride_us, overlay=args.overlay,
                              display=DisplayMapper(args.display, gamma=args.gamma),
                              timing="stream" if live else "index", threaded=live)
            sinks.append(video)
        pipe = Pipeline(stream, source.sensor_size, engine, policy, sinks, live=live or speed > 0,
                        reference=getattr(source, "frames", None), max_frames=args.max_frames,
                        max_gap_us=_max_gap_us(args))
        if video is not None and args.overlay:
            from .viewer.health import PipelineStatus

            video.status = PipelineStatus(pipe)
        if gui:
            from .viewer.app import run_viewer
            from .viewer.display import DisplayMapper

            stats = run_viewer(pipe, check=False, display=DisplayMapper(args.display, gamma=args.gamma),
                               record_path=args.video, record_on_start=bool(args.video),
                               record_overlay=args.overlay, screenshot_dir=args.out or ".")
        else:
            total = _expected_frames(pipe, source, args.max_frames)
            with tqdm(total=total, unit="frame", desc="reconstructing", disable=None, leave=False) as bar:
                stats = pipe.run(progress=bar)
    print(f"livenight: {engine.info.name}: {stats.summary()}")
    if stats.frames == 0 and stats.events_in:
        print(f"livenight: no window completed ({policy.describe()}); try a shorter --window-ms or "
              "--windows count", file=sys.stderr)
    if args.out:
        print(f"livenight: frames written to {Path(args.out).resolve()}")
    if args.video:
        print(f"livenight: video written to {Path(args.video).resolve()}")
    return 0


def _expected_frames(pipe, source, max_frames):
    f = getattr(source, "file", None)
    n = None
    if f is not None:
        pipe.windower.origin_us = pipe.windower.origin_us or f.t_first_us
        n = pipe.windower.expected_windows(t_end_us=f.t_last_us + 1, num_events=f.num_events)
    if max_frames is not None:
        n = max_frames if n is None else min(n, max_frames)
    return n


# ---------------------------------------------------------------------------- demo
def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight demo",
                                description="Simulate a short night clip (no downloads) and reconstruct it: in a "
                                            "window when a display works (in real time), and always into "
                                            "DIR/frame_*.png, DIR/gt/ (the well-lit scene) and DIR/events/ (the "
                                            "events of each window).")
    p.add_argument("--out", metavar="DIR", default="livenight-demo", help="output folder (default ./livenight-demo)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of the simulated clip in seconds (default 2)")
    p.add_argument("--size", type=_size, default=(346, 260), help="sensor size WIDTHxHEIGHT (default 346x260)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the scene and sensor noise (default 0)")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--no-gui", action="store_true", help="never open a window")
    p.add_argument("--keep-h5", action="store_true", help="keep the simulated recording as DIR/night.h5")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_demo(args) -> int:
    from .simulate import write_night

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="livenight-demo-") as tmp:
        h5 = out / "night.h5" if args.keep_h5 else Path(tmp) / "night.h5"
        print(f"livenight: simulating {args.seconds:g} s of night at {args.size[0]}x{args.size[1]} (seed {args.seed})")
        sim = write_night(h5, seconds=args.seconds, size=args.size, seed=args.seed, progress=True)
        print(f"livenight: {sim.events.shape[0]} events, {sim.frames.shape[0]} ground-truth frames")
        run_args = _run_parser().parse_args(["--replay", str(h5), "--out", str(out), "--save-gt", "--save-evframe",
                                             "--crop"]
                                            + (["--max-frames", str(args.max_frames)] if args.max_frames else [])
                                            + (["--no-gui"] if args.no_gui else []))
        return run_pipeline_command(run_args)


# ---------------------------------------------------------------------------- simulate
def _simulate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight simulate",
                                description="Write a simulated night recording in the RLED h5 layout: events from a "
                                            "DVS model with low-light trailing and noise, ground-truth frames at "
                                            "25 fps and event_indices (±10 ms around each frame).")
    p.add_argument("--out", required=True, metavar="FILE", help="output .h5 file")
    p.add_argument("--seconds", type=float, default=2.0, help="duration in seconds (default 2)")
    p.add_argument("--size", type=_size, default=(346, 260), help="sensor size WIDTHxHEIGHT (default 346x260)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); the same seed gives the same file")
    p.add_argument("--fps", type=float, default=25.0, help="ground-truth frame rate (default 25)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_simulate(args) -> int:
    from .simulate import write_night

    sim = write_night(args.out, seconds=args.seconds, size=args.size, seed=args.seed, fps=args.fps, progress=True)
    span_s = (int(sim.events["t"][-1]) - int(sim.events["t"][0])) / 1e6 if sim.events.size else 0.0
    print(f"livenight: wrote {args.out}: {sim.events.shape[0]} events over {span_s:.2f} s "
          f"({sim.events.shape[0] / max(span_s, 1e-9) / 1e6:.2f} M events/s), {sim.frames.shape[0]} frames, "
          f"{sim.sensor_size[0]}x{sim.sensor_size[1]}")
    return 0


# ---------------------------------------------------------------------------- info
def _info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight info",
                                description="Describe a recording: sensor size, events, time range, reference frames.")
    p.add_argument("file", help="recording")
    p.add_argument("--ts-unit", choices=("auto", "us", "s"), default="auto", help="unit of events/ts (default: detect)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_info(args) -> int:
    from livenight.drivers import open_source

    rled = Path(args.file).suffix.lower() in (".h5", ".hdf5")
    with open_source(args.file, **({"ts_unit": args.ts_unit} if rled else {})) as src:
        w, h = src.sensor_size
        if rled:
            f = src.file
            n, t_first, t_last = f.num_events, f.t_first_us, f.t_last_us
            unit = f" (events/ts stored in {f.ts_unit})"
        else:  # other formats have no index: count by streaming once
            n, t_first, t_last, unit = 0, None, None, ""
            for pkt in src:
                if len(pkt):
                    n += len(pkt)
                    t_first = int(pkt.events["t"][0]) if t_first is None else t_first
                    t_last = int(pkt.events["t"][-1])
        frames = getattr(src, "frames", None)
        idx = getattr(src, "event_indices", None)
        span = (t_last - t_first) if n else 0
        print(f"{args.file}: {type(src).__name__}")
        print(f"  sensor         {w}x{h} (width x height)")
        print(f"  events         {n} over {span / 1e6:.3f} s ({n / max(span, 1):.3f} M events/s)")
        if n:
            print(f"  time           {t_first} .. {t_last} µs{unit}")
        print(f"  frames         {0 if frames is None else len(frames)}")
        print(f"  event_indices  {'yes' if idx is not None else 'no'}")
    return 0


# ---------------------------------------------------------------------------- bench
def _bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight bench", description="Benchmarks; each prints ratios against a "
                                                                    "baseline measured in the same run.")
    p.add_argument("what", choices=("ring", "letc", "model"),
                   help="ring: sustained ingest into the event ring buffer; letc: NER-Net's LETC lookup table vs "
                        "the exact per-event MLP; model: per-stage times of a model path vs the reference path")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement (default 3)")
    p.add_argument("--packet-events", type=_positive_int, default=10_000, help="events per packet (default 10000)")
    p.add_argument("--capacity", type=_positive_int, default=1 << 22, help="ring capacity in events (default 4194304)")
    p.add_argument("--events", type=_positive_int, default=1_000_000, help="letc: events per window (default 1000000)")
    p.add_argument("--size", type=_size, help="sensor WIDTHxHEIGHT (default: letc 1280x720, model 346x260)")
    p.add_argument("--model", metavar="FILE", help="model: checkpoint to benchmark (default: random-weight NER-Net)")
    p.add_argument("--engine", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="model: engine for our path (default onnxruntime)")
    p.add_argument("--frames", type=_positive_int, default=10, help="model: windows to time (default 10)")
    p.add_argument("--rate", type=float, default=1e6, help="model: input events/s (default 1e6)")
    p.add_argument("--base-channels", type=_positive_int, default=32,
                   help="model: width of the random NER-Net (default 32, the official width)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_bench(args) -> int:
    from .bench import bench_letc, bench_ring

    if args.what == "letc":
        bench_letc(n_events=args.events, size=args.size or (1280, 720))
    elif args.what == "model":
        from .bench import bench_model

        bench_model(model=args.model, size=args.size or (346, 260), frames=args.frames, rate_ev_per_s=args.rate,
                    engine=args.engine, base_channels=args.base_channels)
    else:
        bench_ring(seconds=args.seconds, packet_events=args.packet_events, capacity=args.capacity)
    return 0


# ---------------------------------------------------------------------------- eval
def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livenight eval",
        description="Reconstruct recordings with reference frames and score them: per-sequence and mean MSE and "
                    "SSIM (on [0,1], at the sensor size), LPIPS when its weights are installed, and frames/s. With "
                    "--model the RLED protocol is used (one frame per image except the last).")
    p.add_argument("files", nargs="+", help="recordings with reference frames (.h5 RLED, .aedat4 with APS frames)")
    _add_run_options(p)
    p.add_argument("--csv", metavar="FILE", help="also write per-sequence scores as CSV")
    return p


def run_eval(args) -> int:
    from livenight.drivers import open_source

    from .eval import FrameScorer, SequenceScores, lpips_available, write_csv
    from .pipeline import Pipeline

    args.keep_padding = False  # metrics compare at the sensor size
    args.replay, args.camera = args.files[0], None
    scorer = FrameScorer()
    ok, why = lpips_available()
    if not ok:
        print(f"livenight: {why}", file=sys.stderr)
    rows = []
    for path in args.files:
        args.replay = path
        with open_source(path) as source:
            if getattr(source, "frames", None) is None:
                raise LivenightError(f"{path}: no reference frames to evaluate against")
            scores = SequenceScores(Path(path).name)

            def on_frame(frame, scores=scores):
                if frame.reference is not None:
                    scorer.score(frame.image, frame.reference, scores)

            with _engine(args, source.sensor_size) as engine:
                policy = _policy(args, source, engine)
                stats = Pipeline(source, source.sensor_size, engine, policy, [], live=False,
                                 reference=source.frames, max_frames=args.max_frames,
                                 max_gap_us=_max_gap_us(args), on_frame=on_frame).run()
            scores.fps = stats.frames / stats.wall_s if stats.wall_s else 0.0
            rows.append(scores)
            print(f"{scores.name}: {scores.frames} frames  MSE {scores.mean('mse'):.5f}  SSIM {scores.mean('ssim'):.4f}"
                  + (f"  LPIPS {scores.mean('lpips'):.4f}" if scores.lpips else "") + f"  {scores.fps:.2f} frames/s")
            print(f"{scores.name}: percentile-normalised: SSIM on active pixels {scores.mean('ssim_active'):.4f} "
                  f"({len(scores.ssim_active)} frames)  full-frame SSIM {scores.mean('ssim_norm'):.4f}  "
                  f"MSE {scores.mean('mse_norm'):.5f}")
    if len(rows) > 1:
        import numpy as np

        print(f"mean over {len(rows)} sequences: MSE {np.mean([r.mean('mse') for r in rows]):.5f}  "
              f"SSIM {np.mean([r.mean('ssim') for r in rows]):.4f}")
    if args.csv:
        write_csv(args.csv, rows)
        print(f"livenight: scores written to {args.csv}")
    return 0


# ---------------------------------------------------------------------------- doctor / devices / record
def _doctor_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight doctor",
                                description="List which backends, engines and viewer pieces are usable here, and why "
                                            "not (with what to install).")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_doctor(args) -> int:
    from .doctor import report

    for name, ok, detail in report():
        print(f"  {'ok ' if ok else 'no '} {name:<40} {detail}")
    return 0


def _devices_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight devices", description="List connected event cameras.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_devices(args) -> int:
    from .doctor import devices

    found = devices()
    if not found:
        print("livenight: no event camera found (see 'livenight doctor' for the backends that can look for one)")
    for backend, desc in found:
        print(f"  {backend:<22} {desc}")
    return 0


def _record_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight record",
                                description="Record any source to an RLED .h5 file. The file is flushed every second, "
                                            "so a killed process leaves a readable file with everything up to the "
                                            "last flush; Ctrl-C closes it cleanly.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", metavar="NAME", help="live source (davis346, evk4, tcp://HOST:PORT, …)")
    src.add_argument("--replay", metavar="FILE", help="a recording to convert (.aedat4, .raw, .dat, .h5)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .h5 (RLED layout)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds of events")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def _until(packets, seconds: float | None):
    """The packets of the first ``seconds`` of events (all of them when None); the last one is cut."""
    t_first = None
    for pkt in packets:
        ev = pkt.events
        if seconds is None:
            yield pkt
            continue
        if ev.size and t_first is None:
            t_first = int(ev["t"][0])
        if t_first is None:
            yield pkt
            continue
        t_stop = t_first + round(seconds * 1e6)
        if ev.size and int(ev["t"][-1]) >= t_stop:
            from dataclasses import replace

            yield replace(pkt, events=ev[ev["t"] < t_stop], t_end_us=min(pkt.t_end_us, t_stop))
            return
        yield pkt
        if pkt.t_end_us >= t_stop:
            return


def run_record(args) -> int:
    """The pipeline with no engine and an RLED sink: every event, and the source's reference images."""
    from tqdm import tqdm

    from livenight.drivers import open_source

    from .pipeline import Pipeline
    from .sinks import RledSink
    from .windowing import TimeWindows

    def counted(packets, bar):
        for pkt in packets:
            bar.update(len(pkt))
            yield pkt

    uri = args.camera or args.replay
    with open_source(uri) as source:
        live = bool(getattr(source, "is_live", False))
        sink = RledSink(args.out, source.sensor_size, references=getattr(source, "frames", None))
        try:
            with tqdm(unit="ev", unit_scale=True, desc="recording", disable=None, leave=False) as bar:
                Pipeline(counted(_until(source, args.seconds), bar), source.sensor_size, None, TimeWindows(),
                         [sink], live=live).run()
        except KeyboardInterrupt:
            print("livenight: interrupted; the recording is closed and valid", file=sys.stderr)
    print(f"livenight: wrote {args.out}: {sink.events_written} events, {sink.images_written} reference images, "
          f"{source.sensor_size[0]}x{source.sensor_size[1]}")
    return 0


# ---------------------------------------------------------------------------- ets
def _ets_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livenight ets",
        description="Event trail suppression (NER-Net's ETS): per pixel, a run of same-polarity events with growing "
                    "gaps (the low-light trail after an edge) is collapsed onto the run's first timestamp + 1 µs per "
                    "event. Streams the input in chunks and writes a valid RLED file (images copied, event_indices "
                    "and num_imgs recomputed).")
    p.add_argument("input", help="RLED .h5 input")
    p.add_argument("output", help="RLED .h5 output (must differ from the input)")
    p.add_argument("--t-on-us", type=float, help="largest gap in µs still counted as a trail for ON events (default 1e6)")
    p.add_argument("--t-off-us", type=float, help="the same for OFF events (default 1e6)")
    p.add_argument("--soft-us", type=float, help="tolerance in µs on the growing-gap rule (default 0)")
    p.add_argument("--chunk-events", type=_positive_int, help="events read per chunk (default 1048576)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_ets(args) -> int:
    from .ets import run_ets_command

    return run_ets_command(args.input, args.output, args.t_on_us, args.t_off_us, args.soft_us, args.chunk_events)


# ---------------------------------------------------------------------------- train / prepare
def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livenight train",
        description="Train a NER-Net-family model with the same code that runs live: RLED files and/or simulated "
                    "night recordings, sequences of windows with shared random crops and flips, L1/SSIM (LPIPS when "
                    "installed) losses, checkpoints loadable by --model. Runs on CPU, CUDA and under torchrun (DDP).")
    p.add_argument("config", help="TOML or JSON config (see configs/ner-tiny.toml)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint (step count, optimizer, RNG)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set steps=100 --set model.base_channels=8 (repeatable)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_train_command(args) -> int:
    from .training import run_train

    result = run_train(args.config, resume=args.resume, overrides=args.set or None)
    if result.get("rank", 0) == 0:
        print(f"livenight: trained to step {result['step']} (loss {result['first_loss']:.4f} -> {result['loss']:.4f}, "
              f"{result['seconds_per_step']:.2f} s/step); checkpoint {result['checkpoint']}, log {result['csv']}")
    return 0


def _prepare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight prepare",
                                description="Convert every RLED .h5 under DATA_DIR to memory-mapped arrays for fast "
                                            "training (unchanged files are skipped).")
    p.add_argument("data_dir", help="folder with .h5 recordings")
    p.add_argument("--out", metavar="DIR", help="output folder (default DATA_DIR/memmap)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_prepare_command(args) -> int:
    from .training import run_prepare

    r = run_prepare(args.data_dir, args.out)
    print(f"livenight: prepared {r['prepared']} recordings ({r['skipped']} up to date) in {r['out_dir']}")
    return 0


# ---------------------------------------------------------------------------- export
def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livenight export",
        description="Export a checkpoint of any supported model family (NER-Net, E2VID, E2VID+, FireNet, FireNet+, "
                    "livenight's own) for a fixed sensor size: to one self-contained ONNX file (state as named "
                    "inputs/outputs; the input representation and post-processing stay outside, described in the "
                    "sidecar) and/or a TensorRT engine built from it. A JSON sidecar is written next to every file; "
                    "loading checks it against the source.")
    p.add_argument("model", help="checkpoint (.pth/.pt/.pth.tar)")
    p.add_argument("--onnx", metavar="FILE", help="write the ONNX graph here")
    p.add_argument("--engine", metavar="FILE", help="also build a TensorRT engine here (needs a GPU and TensorRT; "
                                                     "implies --fp16)")
    p.add_argument("--size", type=_size, default=(1280, 720),
                   help="sensor size WIDTHxHEIGHT the export is for (default 1280x720, the EVK4/RLED sensor)")
    p.add_argument("--fp16", action="store_true", help="export in half precision (what TensorRT FP16 needs)")
    p.add_argument("--workspace-mib", type=_positive_int, default=4096, help="TensorRT workspace limit (default 4096)")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache to read and update")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run_export(args) -> int:
    from livenight import families
    from livenight.engines import model_meta
    from livenight.engines.export import build_tensorrt, export_onnx
    from livenight.model.checkpoint import read_checkpoint

    if not args.onnx and not args.engine:
        raise LivenightError("nothing to do: give --onnx FILE and/or --engine FILE")
    fp16 = args.fp16 or bool(args.engine)
    onnx_path = args.onnx or (str(Path(args.engine).with_suffix(".onnx")))
    ck = read_checkpoint(args.model)
    family = families.detect(ck, args.model)
    model = family.from_checkpoint(ck, args.size, args.model)
    windows = (model_meta(args.model) or {}).get("windows")
    meta = export_onnx(model, onnx_path, fp16=fp16, source=args.model, family=family, windows=windows)
    print(f"livenight: {family.variant(model)} → ONNX ({meta['dtype']}, input {meta['input']['shape']}, "
          f"{len(meta['state'])} state tensors); wrote {', '.join(meta['files'])}")
    if args.engine:
        meta = build_tensorrt(onnx_path, args.engine, workspace_mib=args.workspace_mib,
                              timing_cache=args.timing_cache)
        print(f"livenight: wrote {args.engine} and {args.engine}.json for {meta['tensorrt']['gpu']} "
              f"(TensorRT {meta['tensorrt']['version']})")
    return 0


# ---------------------------------------------------------------------------- main
_COMMANDS = {"bench": (_bench_parser, run_bench), "demo": (_demo_parser, run_demo),
             "devices": (_devices_parser, run_devices), "doctor": (_doctor_parser, run_doctor),
             "record": (_record_parser, run_record), "train": (_train_parser, run_train_command),
             "prepare": (_prepare_parser, run_prepare_command),
             "eval": (_eval_parser, run_eval), "ets": (_ets_parser, run_ets), "export": (_export_parser, run_export),
             "info": (_info_parser, run_info), "simulate": (_simulate_parser, run_simulate)}


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse errors as one line plus where to look, instead of the whole usage block (exit status 2)."""

    def error(message: str):
        parser.exit(2, f"livenight: error: {message} (see '{parser.prog} --help')\n")

    parser.error = error
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, object]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _COMMANDS:
        make, runner = _COMMANDS[argv[0]]
        return _one_line_errors(make()).parse_args(argv[1:]), runner
    return _one_line_errors(_run_parser()).parse_args(argv), run_pipeline_command


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as ``livenight: warning: …`` lines (no source path, no code line)."""
    text = " ".join(str(message).split("\n")).strip()
    print(f"livenight: warning: {text}", file=file or sys.stderr)


def _check_before_run(args, runner) -> None:
    """Checks that must fail before anything starts (a model loads, a camera connects, a file is read)."""
    from .checks import check_device, check_output_dir, check_output_file

    if hasattr(args, "device") or hasattr(args, "dtype"):
        check_device(getattr(args, "device", None) or "cpu", getattr(args, "dtype", None) or "float32")
    if runner is run_pipeline_command:
        if args.speed is not None and not (math.isfinite(args.speed) and args.speed >= 0):
            raise LivenightError(f"--speed must be a finite number >= 0 (0 = as fast as possible; got {args.speed:g})")
        check_output_dir(args.out, "--out")
        check_output_file(args.video, "--video")


def main(argv: list[str] | None = None) -> int:
    args, runner = parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            _check_before_run(args, runner)
            return runner(args)
        except KeyboardInterrupt:
            print("livenight: interrupted", file=sys.stderr)
            return 130
        except (LivenightError, OSError, ValueError) as e:
            if getattr(args, "debug", False):
                raise
            print(f"livenight: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except Exception as e:  # a bug or a library failure: still one line; --debug shows where
            if getattr(args, "debug", False):
                raise
            print(f"livenight: error: {type(e).__name__}: {_one_line(e)} (rerun with --debug for the traceback)",
                  file=sys.stderr)
            return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
