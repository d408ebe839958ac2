"""The ``livenight`` subcommands besides running a source (``livenight --replay`` / ``--camera``), ``demo`` and
``info``: simulate, bench, eval, doctor, devices, record, ets, train, prepare, export. Each is a parser and a
runner; :data:`livenight.cli._COMMANDS` maps the names to them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import argtypes
from .errors import LivenightError

_size = argtypes.size
_positive_int = argtypes.positive_int


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


# ---------------------------------------------------------------------------- bench
def _bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenight bench", description="Benchmarks; each prints ratios against a "
                                                                    "baseline measured in the same run.")
    p.add_argument("what", choices=("ring", "letc", "model", "cpu", "threads", "pipeline", "gpu"),
                   help="ring: sustained ingest into the event ring buffer; letc: NER-Net's LETC lookup table vs "
                        "the exact per-event MLP; model: per-stage times of a model path vs the reference path; "
                        "cpu: fp32 vs the bf16 CPU path (speed, parity over recurrent windows); threads: the bundled "
                        "model idle and under a competing CPU job, thread budget vs torch's default; pipeline: "
                        "file -> windows -> engine -> PNG end to end; gpu: the CUDA / TensorRT check (< 8 min)")
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
    p.add_argument("--windows", type=_positive_int, default=40, help="cpu: recurrent windows (default 40)")
    p.add_argument("--file", metavar="H5", help="pipeline: RLED .h5 file (default: simulate 2 s at 346x260)")
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
    elif args.what == "cpu":
        from .bench import bench_cpu

        bench_cpu(model=args.model, size=args.size or (346, 260), windows=args.windows)
    elif args.what == "threads":
        from .bench import bench_threads

        bench_threads(model=args.model, size=args.size or (346, 260), frames=args.frames)
    elif args.what == "pipeline":
        from .bench import bench_pipeline

        bench_pipeline(path=args.file, model=args.model)
    elif args.what == "gpu":
        from .bench import bench_gpu

        bench_gpu()
    else:
        bench_ring(seconds=args.seconds, packet_events=args.packet_events, capacity=args.capacity)
    return 0


# ---------------------------------------------------------------------------- eval
def _eval_parser() -> argparse.ArgumentParser:
    from .cli import _add_run_options

    p = argparse.ArgumentParser(
        prog="livenight eval",
        description="Reconstruct recordings with reference frames and score them: per-sequence and mean MSE and "
                    "SSIM (on [0,1], at the sensor size), SSIM on active pixels, LPIPS when its weights are installed, "
                    "and frames/s. Windows are the model's own (--windows auto), as for a replay.")
    p.add_argument("files", nargs="+", help="recordings with reference frames (.h5 RLED, .aedat4 with APS frames, "
                                            "ROS bags with a sensor_msgs/Image topic, ECD events.txt with images.txt)")
    _add_run_options(p)
    p.add_argument("--csv", metavar="FILE", help="also write per-sequence scores as CSV")
    return p


def run_eval(args) -> int:
    from livenight.drivers import open_source

    from .cli import _engine, _filters, _max_gap_us, _policy, frame_sinks, source_options

    from .eval import FrameScorer, SequenceScores, lpips_available, write_csv
    from .pipeline import Pipeline

    args.keep_padding = False  # metrics compare at the sensor size
    args.replay, args.camera = args.files[0], None
    scorer = FrameScorer()
    ok, why = lpips_available()
    if not ok:
        print(f"livenight: {why}", file=sys.stderr)
    if args.video and len(args.files) > 1:
        raise LivenightError(f"--video {args.video}: one video per run; give one file (got {len(args.files)})")
    rows = []
    for path in args.files:
        args.replay = path
        with open_source(path, **source_options(args)) as source:
            if getattr(source, "frames", None) is None:
                raise LivenightError(f"{path}: no reference frames to evaluate against")
            scores = SequenceScores(Path(path).name)

            def on_frame(frame, scores=scores):
                if frame.reference is not None:
                    scorer.score(frame.image, frame.reference, scores)

            with _engine(args, source.sensor_size) as engine:
                policy = _policy(args, source, engine)
                out = args.out and (Path(args.out) if len(args.files) == 1 else Path(args.out) / Path(path).stem)
                sinks, _ = frame_sinks(args, out, args.video, policy)  # what was scored, kept as a replay keeps it
                stats = Pipeline(source, source.sensor_size, engine, policy, sinks, live=False,
                                 reference=source.frames, max_frames=args.max_frames,
                                 max_gap_us=_max_gap_us(args), on_frame=on_frame,
                                 filters=_filters(args, source.sensor_size, engine)).run()
            scores.fps = stats.frames / stats.wall_s if stats.wall_s else 0.0
            rows.append(scores)
            print(f"{scores.name}: {scores.frames} frames  MSE {scores.mean('mse'):.5f}  SSIM {scores.mean('ssim'):.4f}"
                  + (f"  LPIPS {scores.mean('lpips'):.4f}" if scores.lpips else "") + f"  {scores.fps:.2f} frames/s"
                  + (f"  filtered {stats.filtered_events} of {stats.events_in} events ({stats.filter_counts})"
                     if stats.filter_counts else ""))
            print(f"{scores.name}: percentile-normalised: SSIM on active pixels {scores.mean('ssim_active'):.4f} "
                  f"({len(scores.ssim_active)} frames)  full-frame SSIM {scores.mean('ssim_norm'):.4f}  "
                  f"MSE {scores.mean('mse_norm'):.5f}")
    if args.out:
        print(f"livenight: frames written to {Path(args.out).resolve()}"
              + (" (one folder per recording)" if len(args.files) > 1 else ""))
    if args.video:
        print(f"livenight: video written to {Path(args.video).resolve()}")
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
    from .cli import _add_source_options

    _add_source_options(p)
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

    from .cli import source_options

    uri = args.camera or args.replay
    with open_source(uri, **source_options(args)) as source:
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
        description="Train a model of any registered family (NER-Net, E2VID / FireNet) with the same code that runs "
                    "live: RLED files and/or simulated night or natural-scene recordings, sequences of windows with shared random crops and flips, L1/SSIM (LPIPS when "
                    "installed) losses, checkpoints loadable by --model. Runs on CPU, CUDA and under torchrun (DDP).")
    p.add_argument("config", help="TOML or JSON config (see configs/firenet-s2-cpu.toml and configs/firenet-s2-ft.toml, "
                                  "the bundled model's two stages)")
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
