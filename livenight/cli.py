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

from . import __version__, argtypes, commands
from .errors import LivenightError
from .engines import BACKENDS

DESCRIPTION = """\
Real-time night vision from event cameras: reconstruct intensity video from a recording or a camera.

commands:
  livenight --replay FILE [options]   reconstruct a recording (.h5 RLED, .aedat4, .raw, .dat, .bag / rosbag2,
                                      .txt / .zip rpg_e2vid and ECD, .csv / .npy / .npz)
  livenight --camera NAME [options]   reconstruct live (davis346, evk4, tcp://HOST:PORT, …)
  livenight demo                      simulate a short night clip and reconstruct it (no downloads)
  livenight simulate --out night.h5   write a simulated night recording (RLED layout, with ground truth)
  livenight info FILE                 describe a recording
  livenight record --camera X --out F record any source to an RLED .h5
  livenight devices | doctor          connected cameras | what can run here and what to install
  livenight ets IN.h5 OUT.h5          event trail suppression (NER-Net's ETS), streaming
  livenight eval FILE… [--model M]    score reconstructions against reference frames (MSE, SSIM)
  livenight train CONFIG              train a model (configs/firenet-s2-ft.toml); prepare DIR: memmaps
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
    _add_source_options(pace)
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
    _add_filter_options(p)
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
    eng.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                     help="network precision (default auto: the fastest measured to stay within 2 grey levels of "
                          "float32 for the model — NER-Net family: bfloat16 on CPUs with AMX / AVX512-BF16, float16 "
                          "on CUDA; the bundled model: bfloat16 on those CPUs; float32 otherwise). float16 needs CUDA")
    eng.add_argument("--exact", action="store_true",
                     help="float32 network (the frames of the official code, within 1 grey level); with "
                          "--exact-letc bit for bit")
    eng.add_argument("--threads", type=_positive_int, metavar="N",
                     help="compute threads for torch / ONNX Runtime / numba (default: cores − 1, at least 1, so "
                          "capture and display keep a core; $LIVENIGHT_THREADS also sets it)")
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


def _add_filter_options(p: argparse.ArgumentParser) -> None:
    """Event filters between the source and the windows (livenight.filters); off unless asked for or unless the
    model's metadata says its training used them."""
    flt = p.add_argument_group("filters")
    flt.add_argument("--hot-pixels", action="store_true",
                     help="mask hot pixels: those firing more than --hot-pixels-factor times the median active pixel "
                          "during the first --hot-pixels-ms ('livenight info FILE --hot-pixels' lists them)")
    flt.add_argument("--hot-pixels-ms", type=float, default=1000.0, metavar="MS",
                     help="stream time to learn hot pixels over, from the first event (default 1000)")
    flt.add_argument("--hot-pixels-factor", type=float, default=10.0, metavar="X",
                     help="hot = more than X times the median count of the pixels that fired and X times its "
                          "second-busiest neighbour (default 10)")
    flt.add_argument("--hot-pixels-refresh-s", type=float, default=0.0, metavar="S",
                     help="relearn the hot pixels every S seconds of stream time (default 0: never)")
    flt.add_argument("--background-ms", type=float, metavar="MS",
                     help="background-activity filter: keep an event only when a neighbouring pixel fired less than "
                          "MS milliseconds before it (dv-processing's rule; typical 1-10)")
    flt.add_argument("--noise-backend", choices=("auto", "numba", "dv"), default="auto",
                     help="background-activity implementation: auto/numba (livenight's kernel, same events as "
                          "dv-processing, far faster) or dv (dv-processing's BackgroundActivityNoiseFilter)")
    flt.add_argument("--max-rate", type=float, metavar="MEV_S",
                     help="event-rate limit in million events/s: bursts above it are randomly subsampled (per 1 ms, "
                          "counted), so a camera at peak rate costs detail instead of falling behind")
    flt.add_argument("--no-filters", action="store_true",
                     help="no filters, even when the model's metadata asks for them")


def _filters(args, sensor_size, engine):
    from .filters import filters_for_run

    return filters_for_run(args, sensor_size, engine, say=print)


def _add_source_options(group) -> None:
    """Options every reader understands where they apply (livenight.drivers.SHARED_OPTIONS)."""
    group.add_argument("--ts-unit", choices=("auto", "us", "s"), default="auto",
                       help="unit of events/ts in .h5 files and of a time column without a unit suffix in .csv / "
                            ".npy / .npz (default: detect; integral values are µs)")
    group.add_argument("--sensor-size", type=_size, metavar="WxH",
                       help="sensor geometry for files that do not say it (.raw / .dat without geometry, text "
                            "without a size line, tables, bags whose messages give 0x0; default: from the file, else "
                            "the largest coordinates seen, with a warning)")
    group.add_argument("--topic", metavar="NAME",
                       help="ROS bags: the event topic to read when there are several (default: the one with most "
                            "messages; 'livenight info BAG' lists them)")
    group.add_argument("--columns", metavar="ROLES",
                       help=".csv / .npy / .npz: the role of each column in order, e.g. x,y,p,t ('-' skips one; "
                            "default: from the column names, else guessed from the first rows)")


def source_options(args) -> dict:
    return {"ts_unit": getattr(args, "ts_unit", None), "sensor_size": getattr(args, "sensor_size", None),
            "topic": getattr(args, "topic", None), "columns": getattr(args, "columns", None)}


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"livenight {__version__}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--replay", metavar="FILE",
                     help="recording to replay: .h5/.hdf5 (RLED layout), .aedat4 (iniVation), .raw (Prophesee "
                          "EVT 2.0/2.1/3.0), .dat (Prophesee DAT), .bag (ROS 1) / a rosbag2 folder, metadata.yaml, "
                          ".db3 or .mcap (ROS 2), .txt/.zip (rpg_e2vid text; ECD events.txt with images.txt), "
                          ".csv/.npy/.npz (event tables)")
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
    dtype = "float32" if args.exact or args.exact_letc else args.dtype
    return open_engine(args.model, sensor_size, backend=args.engine, device=args.device, dtype=dtype,
                       crop=not args.keep_padding, exact=args.exact_letc,
                       cuda_graphs=args.cuda_graphs, say=_say, **options)


def frame_sinks(args, out, video_path, policy, live: bool = False):
    """``(sinks, video)``: where frames are kept — PNGs in ``out`` (``--save-gt`` / ``--save-evframe``) and an MP4
    at ``video_path`` (``--overlay``, ``--display``, ``--gamma``; stream-timed and threaded when ``live``)."""
    from .sinks import PngSink

    sinks = [PngSink(out, save_gt=args.save_gt, save_evframe=args.save_evframe)] if out else []
    video = None
    if video_path:
        from .sinks.video import VideoSink
        from .viewer.display import DisplayMapper

        video = VideoSink(video_path, fps=1e6 / getattr(policy, "stride_us", 40_000), overlay=args.overlay,
                          display=DisplayMapper(args.display, gamma=args.gamma),
                          timing="stream" if live else "index", threaded=live)
        sinks.append(video)
    return sinks, video


def _policy(args, source, engine):
    """--windows auto: what the engine's model was trained with; explicit options override it."""
    from .windowing import CountWindows, RledWindows, TimeWindows

    indices = getattr(source, "event_indices", None)
    kind = args.windows
    if kind == "auto":
        if args.window_ms is None and args.stride_ms is None:
            policy, note = engine.windows_for_source(source)
            if note is not None:
                print(f"livenight: {note}")
            return policy
        kind = "time"
    default = engine.default_windows(indices)
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
    with open_source(uri, **source_options(args)) as source, _engine(args, source.sensor_size) as engine:
        live = bool(getattr(source, "is_live", False))
        stream = source if live or speed == 0 else paced(source, speed)
        policy = _policy(args, source, engine)
        print(f"livenight: {engine.info.name} ({engine.info.backend} {engine.info.device} {engine.info.dtype}), "
              f"{policy.describe()}")
        # with a window, the viewer records the video itself
        sinks, video = frame_sinks(args, args.out, None if gui else args.video, policy, live)
        if args.save_gt and getattr(source, "frames", None) is None:
            print(f"livenight: {uri} has no reference frames; --save-gt writes nothing", file=sys.stderr)
        pipe = Pipeline(stream, source.sensor_size, engine, policy, sinks, live=live or speed > 0,
                        reference=getattr(source, "frames", None), max_frames=args.max_frames,
                        max_gap_us=_max_gap_us(args), filters=_filters(args, source.sensor_size, engine))
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
    if live:
        from .checks import live_summary

        print(f"livenight: {uri}: {live_summary(source, stats)}")
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


# ---------------------------------------------------------------------------- info
def _info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight info",
                                description="Describe a recording: sensor size, events, time range, reference frames.")
    p.add_argument("file", help="recording")
    _add_source_options(p)
    p.add_argument("--hot-pixels", action="store_true",
                   help="list the hot pixels learned over the first --hot-pixels-ms (what --hot-pixels would mask)")
    p.add_argument("--hot-pixels-ms", type=float, default=1000.0, metavar="MS",
                   help="stream time to learn hot pixels over (default 1000)")
    p.add_argument("--hot-pixels-factor", type=float, default=10.0, metavar="X",
                   help="hot = more than X times the median count of the pixels that fired and X times its "
                        "second-busiest neighbour (default 10)")
    p.add_argument("--max-list", type=_positive_int, default=50, metavar="N",
                   help="list at most N hot pixels, most active first (default 50)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def _info_hot_pixels(args) -> int:
    from livenight.drivers import open_source

    from .filters import learn_hot_pixels

    with open_source(args.file, **source_options(args)) as src:
        hp, seen, span_us = learn_hot_pixels(src, args.hot_pixels_ms, args.hot_pixels_factor)
    hot = hp.hot_list()
    print(f"{args.file}: {len(hot)} hot pixels over the first {span_us / 1000:g} ms ({seen} events; median "
          f"active pixel {hp.median_count:g} events; hot: above {args.hot_pixels_factor:g}x that and {args.hot_pixels_factor:g}x "
          "its second-busiest neighbour)")
    for x, y, n in hot[:args.max_list]:
        print(f"  x={x:<5d} y={y:<5d} {n} events ({n / max(span_us, 1) * 1e6:.0f} events/s)")
    if len(hot) > args.max_list:
        print(f"  … {len(hot) - args.max_list} more (--max-list N shows more)")
    return 0


def run_info(args) -> int:
    from livenight.drivers import open_source

    if args.hot_pixels:
        return _info_hot_pixels(args)
    with open_source(args.file, **source_options(args)) as src:
        w, h = src.sensor_size
        f = getattr(src, "file", None)  # indexed formats (RLED) know their counts without a pass
        if f is not None:
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
        for name, msgtype, count in getattr(src, "topics", ()):  # ROS bags
            mark = " (read)" if name == getattr(src, "topic", None) else (
                " (frames)" if name == getattr(src, "image_topic", None) else "")
            print(f"  topic          {name}  {msgtype}  {count} messages{mark}")
    return 0


# ---------------------------------------------------------------------------- main
# subcommand → (parser, runner); the ones not defined here live in livenight.commands. Keep sorted.
_COMMANDS = {"bench": (commands._bench_parser, commands.run_bench), "demo": (_demo_parser, run_demo),
             "devices": (commands._devices_parser, commands.run_devices),
             "doctor": (commands._doctor_parser, commands.run_doctor),
             "ets": (commands._ets_parser, commands.run_ets), "eval": (commands._eval_parser, commands.run_eval),
             "export": (commands._export_parser, commands.run_export), "info": (_info_parser, run_info),
             "prepare": (commands._prepare_parser, commands.run_prepare_command),
             "record": (commands._record_parser, commands.run_record),
             "simulate": (commands._simulate_parser, commands.run_simulate),
             "train": (commands._train_parser, commands.run_train_command)}
assert list(_COMMANDS) == sorted(_COMMANDS), "keep the command table sorted"


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
    elif runner is run_demo:
        check_output_dir(args.out, "--out")
    elif runner is commands.run_record:
        check_output_file(args.out, "--out")
    elif runner is commands.run_ets:
        check_output_file(args.output, "OUTPUT")


def main(argv: list[str] | None = None) -> int:
    args, runner = parse_args(argv)
    from .cpu import configure_threads

    configure_threads(getattr(args, "threads", None))  # before torch / numba start their pools
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
