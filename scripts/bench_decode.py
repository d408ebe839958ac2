"""Benchmark the Prophesee decoders (``livenight.drivers.prophesee_raw``) against baselines measured in the same run.

For every file in ``../shared/data`` and for a large synthetic stream (re-encoded with the module's own
encoders as EVT3, EVT2, EVT2.1 and DAT), it prints, in million events per second (best of ``--repeat``):

* ``decode``: :func:`decode_file` over the whole file (reading included, stream order);
* ``source``: iterating the replay source (look-behind sort, packets);
* ``floor``: ``np.fromfile`` of the payload words — the I/O floor: no decoder can beat it;
* ``numpy``: a straightforward vectorised pure-numpy decoder (EVT2 and EVT3 only; written here, whole file in
  memory) — also a cross-check: its events must equal the streaming decoder's;

and the ratios ``decode / numpy`` and ``decode / floor``.

Example:
    python scripts/bench_decode.py --synthetic-events 5000000 --repeat 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from livenight.drivers.prophesee_raw import (DatSource, PropheseeRawSource, decode_file, read_dat_header,
                                             read_raw_header, write_dat, write_raw)
from livenight.events import EVENT_DTYPE

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = (1280, 720)


# ---------------------------------------------------------------------------- numpy reference decoders
def _last_index(mask: np.ndarray) -> np.ndarray:
    """For every position, the index of the last True at or before it (−1 if none)."""
    idx = np.where(mask, np.arange(mask.shape[0]), -1)
    return np.maximum.accumulate(idx) if idx.size else idx


def numpy_decode_evt2(words: np.ndarray, width: int, height: int) -> np.ndarray:
    """EVT 2.0, whole payload at once (HAL semantics: 34-bit time with loops, CD words before the first
    TIME_HIGH skipped, out-of-sensor events dropped)."""
    w = words.astype(np.int64)
    typ = w >> 28
    is_th = typ == 8
    hi = w[is_th] & 0xFFFFFFF
    loops = np.concatenate([[0], np.cumsum(hi[:-1] - hi[1:] >= (1 << 27))]) if hi.size else hi
    th_us = (hi << 6) + (loops << 34)
    th_rank = np.cumsum(is_th) - 1  # rank of the last TIME_HIGH at or before each word
    cd = (typ < 2) & (th_rank >= 0)
    wc = w[cd]
    x = (wc >> 11) & 0x7FF
    y = wc & 0x7FF
    keep = (x < width) & (y < height)
    ev = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    ev["t"] = (th_us[th_rank[cd]] + ((wc >> 22) & 0x3F))[keep]
    ev["x"] = x[keep]
    ev["y"] = y[keep]
    ev["p"] = typ[cd][keep]
    return ev


def numpy_decode_evt3(words: np.ndarray, width: int, height: int) -> np.ndarray:
    """EVT 3.0, whole payload at once, by forward-filling "index of the last word of type k" (formats.md §3.6).

    Time: a TIME_LOW counts only when it comes after the last TIME_HIGH that changed the high value; loops from
    the TIME_HIGH sequence dropping by ≥ 2048. Vectors: base x from the last VECT_BASE_X plus the 12 / 8
    increments of the vector words since; bits expanded with a broadcast shift; events merged in word order.
    """
    w = words.astype(np.int64)
    n = w.shape[0]
    typ = w >> 12
    pay = w & 0xFFF
    is_th = typ == 8
    th_pos = np.flatnonzero(is_th)
    hi = pay[th_pos]
    if hi.size:
        prev = np.concatenate([[hi[0]], hi[:-1]])
        loops = np.cumsum(prev >= hi + 2048)
        changed = np.concatenate([[True], hi[1:] != hi[:-1]])
    else:
        loops = changed = hi
    th_us = hi * 4096 + loops * (1 << 24)
    th_rank = np.cumsum(is_th) - 1
    have = th_rank >= 0
    change_mask = np.zeros(n, dtype=bool)
    change_mask[th_pos[changed]] = True
    last_change = _last_index(change_mask)
    last_tl = _last_index(typ == 6)
    tl = np.where(last_tl > last_change, pay[np.maximum(last_tl, 0)], 0)
    t = np.where(have, th_us[np.maximum(th_rank, 0)] if th_us.size else 0, 0) + tl
    last_y = _last_index((typ == 0) | (typ == 1))
    y = np.where(last_y >= 0, pay[np.maximum(last_y, 0)] & 0x7FF, 0)
    cd_row = np.where(last_y >= 0, typ[np.maximum(last_y, 0)] == 0, True)
    ok = have & cd_row
    # single events
    ax = np.flatnonzero((typ == 2) & ok)
    # vector events
    inc = np.where(typ == 4, 12, np.where(typ == 5, 8, 0))
    cum = np.cumsum(inc) - inc  # increments before each word
    last_b = _last_index(typ == 3)
    base = np.where(last_b >= 0, pay[np.maximum(last_b, 0)] & 0x7FF, 0)
    vpol = np.where(last_b >= 0, (pay[np.maximum(last_b, 0)] >> 11) & 1, 0)
    base = base + cum - np.where(last_b >= 0, cum[np.maximum(last_b, 0)], 0)
    vw = np.flatnonzero(((typ == 4) | (typ == 5)) & ok)
    nbits = np.where(typ[vw] == 4, 12, 8)
    bits = (pay[vw][:, None] >> np.arange(12)) & 1
    bits[np.arange(12)[None, :] >= nbits[:, None]] = 0
    vi, vb = np.nonzero(bits)
    word = np.concatenate([ax, vw[vi]])
    bit = np.concatenate([np.zeros(ax.size, np.int64), vb])
    xs = np.concatenate([pay[ax] & 0x7FF, base[vw[vi]] + vb])
    ps = np.concatenate([(pay[ax] >> 11) & 1, vpol[vw[vi]]])
    order = np.argsort(word * 16 + bit, kind="stable")
    word, xs, ps = word[order], xs[order], ps[order]
    ys = y[word]
    keep = (xs < width) & (ys < height)
    ev = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    ev["t"] = t[word][keep]
    ev["x"] = xs[keep]
    ev["y"] = ys[keep]
    ev["p"] = ps[keep]
    return ev


# ---------------------------------------------------------------------------- synthetic stream
def synthetic_events(n: int, seed: int = 0, rate_ev_per_s: float = 10e6, size=SIZE) -> np.ndarray:
    """A dense stream like an edge sweeping a textured scene: half isolated events, half row bursts (same t, y,
    p; x increasing by 1–2 columns, 2–24 events), time-sorted, starting at 1 s."""
    rng = np.random.default_rng(seed)
    width, height = size
    n_burst_ev = n // 2
    lengths = rng.integers(2, 25, size=n_burst_ev // 12 + 1)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n_burst_ev) + 1]
    n_bursts = lengths.size
    n_single = max(0, n - int(lengths.sum()))
    groups = n_bursts + n_single
    sizes = np.concatenate([lengths, np.ones(n_single, np.int64)])
    rng.shuffle(sizes)
    total = int(sizes.sum())
    start = np.repeat(np.cumsum(sizes) - sizes, sizes)
    gid = np.repeat(np.arange(groups), sizes)
    span_us = total / rate_ev_per_s * 1e6
    gt = 1_000_000 + np.sort(rng.integers(0, max(1, int(span_us)), groups))
    gy = rng.integers(0, height, groups)
    gp = rng.integers(0, 2, groups)
    gx = rng.integers(0, width - 64, groups)
    steps = rng.integers(1, 3, total)
    steps[start == np.arange(total)] = 0
    csum = np.cumsum(steps)
    xoff = csum - csum[start]  # columns from the burst's first event
    ev = np.empty(total, dtype=EVENT_DTYPE)
    ev["t"] = gt[gid]
    ev["x"] = gx[gid] + xoff
    ev["y"] = gy[gid]
    ev["p"] = gp[gid]
    return ev[:n]


# ---------------------------------------------------------------------------- measurements
def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _words(path: Path, fmt: str, offset: int) -> np.ndarray:
    dtype = {"EVT2": "<u4", "EVT3": "<u2", "EVT21": "<u8", "EVT21_LEGACY": "<u8", "DAT": "<u4"}[fmt]
    return np.fromfile(path, dtype=dtype, offset=offset)


def bench_file(path: Path, repeat: int, chunk_bytes: int, check: bool) -> dict:
    is_dat = path.suffix.lower() == ".dat"
    header = read_dat_header(path) if is_dat else read_raw_header(path)
    fmt = header.format
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def decode():
            n = 0
            for ev in decode_file(path, chunk_bytes=chunk_bytes):
                n += ev.shape[0]
            return n

        def source():
            cls = DatSource if is_dat else PropheseeRawSource
            with cls(path, chunk_bytes=chunk_bytes) as src:
                return sum(len(p) for p in src)

        decode()  # JIT / cache load outside the timing
        t_dec, n = _best(decode, repeat)
        t_src, n_src = _best(source, repeat)
        t_floor, _ = _best(lambda: _words(path, fmt, header.payload_offset), repeat)
        row = {"file": path.name, "format": fmt, "MB": path.stat().st_size / 1e6, "events": n,
               "decode": n / t_dec / 1e6, "source": n_src / t_src / 1e6, "floor": n / t_floor / 1e6,
               "numpy": None, "equal": None}
        ref = {"EVT2": numpy_decode_evt2, "EVT3": numpy_decode_evt3}.get(fmt)
        if ref is not None:
            w, h = decode_file(path).sensor_size
            t_np, ev_np = _best(lambda: ref(_words(path, fmt, header.payload_offset), w, h), max(1, repeat // 2))
            row["numpy"] = ev_np.shape[0] / t_np / 1e6
            if check:
                ours = np.concatenate([e.view("V13") for e in decode_file(path)]).view(EVENT_DTYPE)
                row["equal"] = bool(ours.shape == ev_np.shape and all(np.array_equal(ours[k], ev_np[k])
                                                                       for k in "txyp"))
    return row


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    if not args.no_files:
        data = Path(args.data)
        if not data.is_dir():
            raise SystemExit(f"no data folder {data} (pass --data or --no-files)")
        for path in sorted(data.glob("*.raw")) + sorted(data.glob("*.dat")):
            rows.append(bench_file(path, args.repeat, args.chunk_bytes, args.check))
    if args.synthetic_events > 0:
        ev = synthetic_events(args.synthetic_events, seed=args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in args.formats.split(","):
                p = Path(tmp) / f"synthetic_{fmt.lower()}.{'dat' if fmt == 'DAT' else 'raw'}"
                if fmt == "DAT":
                    write_dat(p, ev, SIZE)
                else:
                    write_raw(p, ev, fmt, SIZE)
                row = bench_file(p, args.repeat, args.chunk_bytes, args.check)
                row["file"] = f"synthetic {fmt}"
                if row["events"] != ev.shape[0]:
                    raise SystemExit(f"synthetic {fmt}: decoded {row['events']} events, encoded {ev.shape[0]}")
                rows.append(row)
                p.unlink()
    _print(rows)
    return rows


def _print(rows: list[dict]) -> None:
    head = (f"{'file':<24} {'format':<12} {'MB':>7} {'events':>11} {'decode':>8} {'source':>8} {'numpy':>8} "
            f"{'floor':>9} {'dec/numpy':>9} {'dec/floor':>9} {'=numpy':>6}")
    print("M events/s, best of the repeats; numpy = vectorised pure-numpy decoder, floor = np.fromfile of the words")
    print(head)
    print("-" * len(head))
    for r in rows:
        numpy_s = f"{r['numpy']:8.1f}" if r["numpy"] else f"{'-':>8}"
        ratio_np = f"{r['decode'] / r['numpy']:8.1f}x" if r["numpy"] else f"{'-':>9}"
        eq = "-" if r["equal"] is None else ("yes" if r["equal"] else "NO")
        print(f"{r['file']:<24} {r['format']:<12} {r['MB']:7.2f} {r['events']:11,d} {r['decode']:8.1f} "
              f"{r['source']:8.1f} {numpy_s} {r['floor']:9.1f} {ratio_np} {r['decode'] / r['floor']:8.2f}x {eq:>6}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder with the shared recordings")
    ap.add_argument("--no-files", action="store_true", help="skip the shared recordings")
    ap.add_argument("--synthetic-events", type=int, default=20_000_000,
                    help="events in the synthetic stream (0: none)")
    ap.add_argument("--formats", default="EVT3,EVT2,EVT21,DAT", help="synthetic encodings, comma-separated")
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats (best is reported)")
    ap.add_argument("--chunk-bytes", type=int, default=8 << 20, help="decoder read size in bytes")
    ap.add_argument("--check", action="store_true", help="compare the streaming decoder with the numpy one")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
