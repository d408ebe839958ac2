"""Benchmark the viewer's display path: ms per shown frame at 346x260 and 1280x720, against pg.ImageView.

    python scripts/bench_viewer.py                       # off screen (QT_QPA_PLATFORM=offscreen), 200 frames
    python scripts/bench_viewer.py --sizes 640x480 --frames 500 --onscreen

Each path draws the same pre-made frames and then runs ``processEvents()`` so the frame is painted, timed per
frame after ``--warmup`` frames; the widget is sized so a picture is shown at about 1:1. Paths:

* ``ImageView`` (baseline): ``pg.ImageView.setImage(u8, autoRange=False, autoLevels=False,
  autoHistogramRange=False)`` — the obvious pyqtgraph widget; it recomputes a histogram every frame.
* ``window recon``: :class:`ViewerWindow` with the reconstruction panel only (``ImageItem`` uint8 fast path).
* ``window full``: what the live viewer does per shown frame: auto-exposure + gamma (:class:`DisplayMapper`),
  the event picture (:func:`event_rgb`), reconstruction + events + reference panels.
* ``prep only``: the numpy part of ``window full`` (mapping and event picture) without Qt.

The ratio column is baseline ms / path ms (> 1: faster than ImageView), measured in the same run. Off screen the
paint goes to an image in memory; on a real display the compositor and vsync add to it (and cap it at the
refresh rate), which the live viewer meets by drawing only the newest frame at most ``max_display_fps`` times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from livenight import argtypes

_size = argtypes.size
_positive_int = argtypes.positive_int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_viewer.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=lambda s: [_size(v) for v in s.split(",")], default=[(346, 260), (1280, 720)],
                   metavar="WxH[,WxH]", help="frame sizes (default 346x260,1280x720)")
    p.add_argument("--frames", type=_positive_int, default=200, help="timed frames per path and size (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first (default 10)")
    p.add_argument("--events-per-pixel", type=float, default=0.2,
                   help="events per window per pixel for the event panel (default 0.2: 18k at 346x260, 184k at "
                        "1280x720)")
    p.add_argument("--onscreen", action="store_true",
                   help="use the real display instead of QT_QPA_PLATFORM=offscreen (needs a working display)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _frames(size: tuple[int, int], n: int, events_per_pixel: float, seed: int):
    """``n`` distinct (reconstruction, events, reference) triples: a moving gradient with noise."""
    import numpy as np

    from livenight.events import EVENT_DTYPE

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n_ev = int(events_per_pixel * w * h)
    out = []
    for k in range(n):
        base = 0.5 + 0.25 * np.sin((xx + 7 * k) / 23.0) * np.cos((yy - 3 * k) / 31.0)
        recon = np.clip((base + rng.normal(0, 0.03, (h, w))) * 255, 0, 255).astype(np.uint8)
        ev = np.empty(n_ev, dtype=EVENT_DTYPE)
        ev["t"] = np.sort(rng.integers(0, 40_000, n_ev))
        ev["x"] = rng.integers(0, w, n_ev)
        ev["y"] = rng.integers(0, h, n_ev)
        ev["p"] = rng.integers(0, 2, n_ev)
        ref = (np.clip(base, 0, 1) * 255).astype(np.uint8)
        out.append((recon, ev, ref))
    return out


def _painted(item) -> bool:
    """True once the ImageItem converted its latest array (pyqtgraph 0.13: ``qimage``; 0.14: ``_renderRequired``)."""
    return item.qimage is not None and not getattr(item, "_renderRequired", False)


def _time(draw, frames, app, items, n: int, warmup: int) -> list[float]:
    """Per-frame seconds of ``draw`` plus event processing until every ImageItem in ``items`` was painted.

    ``setImage`` only stores the array; the ImageItem converts it to a QImage in its ``paint``, which runs when
    the event loop delivers the scene update. So the loop runs until each item has rendered again (a single
    ``processEvents()`` is not always enough, and would time a frame that was never drawn).
    """
    times = []
    for i in range(warmup + n):
        recon, ev, ref = frames[i % len(frames)]
        t0 = time.perf_counter()
        draw(recon, ev, ref)
        for _ in range(50):
            app.processEvents()
            if all(_painted(item) for item in items):
                break
        else:
            raise RuntimeError("the frame was not painted after 50 processEvents() calls")
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def run(args: argparse.Namespace) -> list[dict]:
    if not args.onscreen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    else:
        from livenight.viewer.platform_check import check_display

        ok, message = check_display(probe=True)
        if not ok:
            raise SystemExit(f"bench_viewer.py: --onscreen but no window can open: {message}")
    import pyqtgraph as pg
    from PyQt5 import QtWidgets

    from livenight.viewer.display import DisplayMapper, event_rgb
    from livenight.viewer.window import ViewerWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    platform = app.platformName()
    results = []
    for size in args.sizes:
        w, h = size
        frames = _frames(size, 16, args.events_per_pixel, args.seed)
        rows = []

        iv = pg.ImageView()
        iv.resize(w + 120, h)  # the histogram widget takes ~120 px beside the picture
        iv.show()
        iv.setImage(frames[0][0], autoRange=True, autoLevels=False, levels=(0, 255))
        app.processEvents()
        rows.append(("ImageView (baseline)", _time(
            lambda r, e, f: iv.setImage(r, autoRange=False, autoLevels=False, autoHistogramRange=False),
            frames, app, [iv.imageItem], args.frames, args.warmup)))
        iv.close()

        recon_only = ViewerWindow(size, show_events=False, show_reference=False)
        recon_only.resize(w, h + 20 + recon_only.status.height())
        recon_only.show()
        rows.append(("window recon", _time(lambda r, e, f: recon_only.show_images(r), frames, app,
                                           [recon_only.recon_item], args.frames, args.warmup)))
        recon_only.close()

        mapper = DisplayMapper("auto", gamma=2.2)
        full = ViewerWindow(size, show_events=True, show_reference=True)
        full.resize(max(480, int(1.5 * w)), max(240, h) + 40 + full.status.height())  # tiny panels are not painted
        full.show()

        def draw_full(r, e, f):
            full.show_images(mapper(r), event_rgb(e, size), f)

        rows.append(("window full", _time(draw_full, frames, app,
                                          [full.recon_item, full.event_item, full.ref_item], args.frames,
                                          args.warmup)))
        full.close()
        prep = []
        for i in range(args.warmup + args.frames):
            r, e, _ = frames[i % len(frames)]
            t0 = time.perf_counter()
            mapper(r)
            event_rgb(e, size)
            if i >= args.warmup:
                prep.append(time.perf_counter() - t0)
        rows.append(("prep only (numpy)", prep))

        base_ms = 1e3 * statistics.mean(rows[0][1])
        for name, times in rows:
            ms = 1e3 * statistics.mean(times)
            results.append({"size": f"{w}x{h}", "path": name, "ms_per_frame": ms,
                            "median_ms": 1e3 * statistics.median(times), "vs_baseline": base_ms / ms,
                            "events": int(args.events_per_pixel * w * h)})
    print(f"viewer display cost per frame (platform '{platform}', {args.frames} frames after {args.warmup} warm-up, "
          f"pyqtgraph {pg.__version__})")
    print(f"{'size':>9}  {'path':<22} {'ms/frame':>9} {'median':>8} {'vs ImageView':>13}")
    for r in results:
        print(f"{r['size']:>9}  {r['path']:<22} {r['ms_per_frame']:9.2f} {r['median_ms']:8.2f} "
              f"{r['vs_baseline']:12.2f}x")
    print(f"(event panel: {args.events_per_pixel:g} events per pixel per window; window full = auto-exposure + "
          "gamma + event picture + 3 panels)")
    return results


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
