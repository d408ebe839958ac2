"""Corrupt input never hangs, crashes or turns into video (issue 14).

Small recordings of every format (made here: EVT2 / EVT3 ``.raw``, ``.dat``, RLED ``.h5``, ``.aedat4``) are
truncated, get bytes flipped or overwritten, or keep only their header or a random payload behind it, with fixed
seeds. Each case is read by the source API and a few by the CLI, all in *one* child process (a native crash or a
hang cannot take the test session with it), each under a thread deadline. Every case must end in one of:

* a clean error: a :class:`~livenight.errors.SourceError` (CLI: exit 2 and one ``livenight: error:`` line)
  whose message is one line naming the file;
* a replay whose events are time-sorted and inside the sensor, with at most one-line warnings;

and never in a hang, another exception type (a traceback), or events from a random payload.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SENSOR = (320, 240)
DEADLINE_S = 20.0  # per case; a clean read of these files takes milliseconds


# ---------------------------------------------------------------------------- the files
def _events(n: int = 6000, seed: int = 0) -> np.ndarray:
    from livenight.events import make_events

    rng = np.random.default_rng(seed)
    t = 1000 + np.sort(rng.integers(0, 600_000, n))
    return make_events(t, rng.integers(0, SENSOR[0], n), rng.integers(0, SENSOR[1], n), rng.integers(0, 2, n))


def make_originals(folder: Path) -> dict[str, tuple[Path, int]]:
    """name -> (file, byte offset where the payload starts)."""
    from livenight.drivers.prophesee_raw import read_dat_header, read_raw_header, write_dat, write_raw
    from livenight.drivers.rled import RledWriter

    ev = _events()
    out = {}
    for fmt in ("EVT2", "EVT3"):
        p = write_raw(folder / f"orig_{fmt.lower()}.raw", ev, fmt, SENSOR)
        out[fmt] = (p, read_raw_header(p).payload_offset)
    p = write_dat(folder / "orig.dat", ev, SENSOR)
    out["DAT"] = (p, read_dat_header(p).payload_offset)
    p = folder / "orig.h5"
    with RledWriter(p, SENSOR, flush_every_s=0) as w:
        w.add_events(ev)
        for k in range(1, 12):
            w.add_image(np.full((SENSOR[1], SENSOR[0]), 10 * k, np.uint8), 1000 + 50_000 * k, exposure_us=1000)
    out["RLED"] = (p, 0)
    aedat4 = _write_aedat4(folder / "orig.aedat4", ev)
    if aedat4 is not None:
        out["AEDAT4"] = (aedat4, 4096)
    return out


def _write_aedat4(path: Path, ev: np.ndarray) -> Path | None:
    try:
        import dv_processing as dv
    except ImportError:
        return None
    from livenight.drivers._dv import events_to_store

    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.DAVISConfig("DAVIS346_fuzz", SENSOR))
    for k in range(1, 6):
        img = np.full((SENSOR[1], SENSOR[0]), 20 * k, np.uint8)
        writer.writeFrame(dv.Frame(1000 + 100_000 * k, 1000, 0, 0, img, dv.FrameSource.SENSOR))
    for a in range(0, ev.shape[0], 500):  # several packets, so one damaged packet is not the whole file
        writer.writeEvents(events_to_store(dv, ev[a:a + 500]))
    del writer
    return path


def real_originals() -> dict[str, tuple[Path, int]]:
    """The small real recordings, when $LIVENIGHT_DATA (default ../shared/data) has them."""
    from conftest import data_dir

    from livenight.drivers.prophesee_raw import read_raw_header

    out = {}
    for name in ("evt3_sample.raw", "evt2.raw", "davis346.aedat4"):
        path = data_dir() / name
        if path.is_file():
            offset = 4096 if name.endswith(".aedat4") else read_raw_header(path).payload_offset
            out[f"real-{name.split('.')[0]}"] = (path, offset)
    return out


def make_cases(folder: Path, originals: dict[str, tuple[Path, int]] | None = None) -> list[dict]:
    """Deterministic mutations of every original: (name, kind, path, must_fail)."""
    cases = []
    for fmt, (orig, payload_at) in (originals or make_originals(folder)).items():
        data = orig.read_bytes()
        suffix = orig.suffix

        def add(kind: str, blob: bytes, must_fail: bool, fmt=fmt, suffix=suffix) -> None:
            p = folder / f"{fmt.lower()}_{kind}{suffix}"
            p.write_bytes(blob)
            cases.append({"name": f"{fmt}:{kind}", "path": str(p), "must_fail": must_fail})

        add("intact", data, False)
        for frac in (0.1, 0.5, 0.97):
            add(f"cut{int(frac * 100)}", data[: max(payload_at + 1, int(len(data) * frac))], False)
        for seed, flips in ((1, 1), (2, 8), (3, 64), (4, 512)):
            b = bytearray(data)
            rng = np.random.default_rng(seed)
            for pos in rng.integers(payload_at, len(b), size=flips):
                b[pos] = int(rng.integers(0, 256))
            add(f"flip{flips}", bytes(b), False)
        if fmt != "RLED":  # an h5 file has no header / payload split
            rng = np.random.default_rng(7)
            add("random_payload", data[:payload_at] + rng.bytes(max(4096, len(data) // 4)), True)
            add("header_only", data[:payload_at], True)
        add("random_file", np.random.default_rng(8).bytes(len(data) // 2), True)
    return cases


# ---------------------------------------------------------------------------- the child process
def _read_case(path: str) -> dict:
    import warnings

    from livenight.drivers import open_source
    from livenight.errors import SourceError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with open_source(path) as src:
                parts = [p.events for p in src]
                size = src.sensor_size
        except SourceError as e:
            return {"outcome": "error", "message": str(e)}
        except Exception as e:  # anything else is a bug: it would be a traceback
            return {"outcome": "exception", "message": f"{type(e).__name__}: {e}"}
    ev = np.concatenate(parts) if parts else np.empty(0)
    t = ev["t"] if ev.size else np.empty(0, np.int64)
    return {"outcome": "ok", "events": int(ev.shape[0]),
            "sorted": bool(np.all(np.diff(t) >= 0)),
            "inside": bool(ev.size == 0 or (int(ev["x"].max()) < size[0] and int(ev["y"].max()) < size[1])),
            "warnings": [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]}


def _cli_case(path: str, out_dir: str) -> dict:
    import contextlib
    import io

    from livenight.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(["--replay", path, "--no-gui", "--max-frames", "5", "--out", out_dir, "--engine",
                       "complementary"])
        except SystemExit as e:
            rc = e.code
    frames = len(list(Path(out_dir).glob("frame_*.png"))) if Path(out_dir).is_dir() else 0
    return {"outcome": "cli", "rc": rc, "stderr": err.getvalue(), "frames": frames}


def _worker(cases_file: str) -> None:
    import threading

    cases = json.loads(Path(cases_file).read_text())
    for case in cases:
        result: dict = {}

        def run(case=case, result=result) -> None:
            try:
                if case.get("cli"):
                    result.update(_cli_case(case["path"], case["out"]))
                else:
                    result.update(_read_case(case["path"]))
            except BaseException as e:  # noqa: BLE001 - reported, judged by the parent
                result.update({"outcome": "exception", "message": f"{type(e).__name__}: {e}"})

        t0 = time.monotonic()
        th = threading.Thread(target=run, daemon=True)
        th.start()
        th.join(DEADLINE_S)
        if th.is_alive():
            result = {"outcome": "hang"}
        result.update({"name": case["name"], "seconds": round(time.monotonic() - t0, 3)})
        print(json.dumps(result), flush=True)
        if result["outcome"] == "hang":
            break


# ---------------------------------------------------------------------------- the test
def _run_worker(tmp_path: Path, cases: list[dict]) -> list[dict]:
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(cases))
    budget = DEADLINE_S * 3 + 2 * len(cases)
    proc = subprocess.run([sys.executable, __file__, "--worker", str(cases_file)], capture_output=True, text=True,
                          timeout=budget, cwd=str(tmp_path))
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    done = {r["name"] for r in results}
    missing = [c["name"] for c in cases if c["name"] not in done]
    assert not missing, (f"the reader process died (exit {proc.returncode}) at case {missing[0]}: "
                         f"{proc.stderr[-2000:]}")
    # the child never printed anything on its own (Rust panics, library chatter) besides the results
    assert "panicked" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return results


@pytest.mark.parametrize("which", ["made", "real"])
def test_corrupt_files_end_in_an_error_or_a_plausible_replay(tmp_path, which):
    if which == "real":
        originals = real_originals()
        if not originals:
            pytest.skip("no real recordings in LIVENIGHT_DATA (default ../shared/data)")
        cases = make_cases(tmp_path, originals)
    else:
        cases = make_cases(tmp_path)
    results = {r["name"]: r for r in _run_worker(tmp_path, cases)}
    table, problems = [], []
    for case in cases:
        r = results[case["name"]]
        table.append(f"{case['name']:24s} {r['outcome']:9s} {r['seconds']:6.3f} s  "
                     f"{r.get('events', '')} {(r.get('message') or '; '.join(r.get('warnings', [])))[:150]}")
        if r["outcome"] not in ("ok", "error"):
            problems.append(f"{case['name']}: {r}")
        elif r["outcome"] == "error":
            if "\n" in r["message"] or case["path"] not in r["message"]:
                problems.append(f"{case['name']}: not a one-line error naming the file: {r['message']!r}")
        elif case["must_fail"]:
            problems.append(f"{case['name']}: garbage was replayed as {r['events']} events")
        elif not (r["sorted"] and r["inside"] and r["events"] > 0):
            problems.append(f"{case['name']}: implausible replay {r}")
        elif any("\n" in w for w in r["warnings"]):
            problems.append(f"{case['name']}: multi-line warning {r['warnings']}")
    print("\n".join(table))
    assert not problems, "\n".join(problems)
    # the intact files replay completely, without a warning (beyond a geometry note)
    for case in cases:
        if case["name"].endswith(":intact") and not case["name"].startswith("real-"):
            r = results[case["name"]]
            assert r["outcome"] == "ok" and r["events"] == 6000, r
            assert not [w for w in r["warnings"] if "repaired" in w or "dropped" in w or "skipped" in w], r


def test_cli_on_corrupt_files_is_one_line_and_makes_no_frames_from_garbage(tmp_path):
    cases = []
    for case in make_cases(tmp_path):
        fmt, kind = case["name"].split(":")
        if kind in ("random_payload", "flip64", "cut50") and fmt in ("EVT3", "DAT", "AEDAT4"):
            cases.append({**case, "cli": True, "out": str(tmp_path / f"out_{fmt}_{kind}")})
        if case["name"] == "RLED:flip8":
            cases.append({**case, "cli": True, "out": str(tmp_path / "out_rled_flip8")})
    results = {r["name"]: r for r in _run_worker(tmp_path, cases)}
    for case in cases:
        r = results[case["name"]]
        assert r["outcome"] == "cli", f"{case['name']}: {r}"
        lines = r["stderr"].splitlines()
        assert "Traceback" not in r["stderr"] and all(line.startswith("livenight: ") for line in lines), r["stderr"]
        # warnings come during the run they belong to (a source closed early still reports), never later
        assert all(case["path"] in line for line in lines if "warning" in line or "error" in line), r["stderr"]
        assert r["rc"] in (0, 2), r
        if r["rc"] == 2:
            assert sum(line.startswith("livenight: error: ") for line in lines) == 1, r["stderr"]
        if case["must_fail"]:
            assert r["rc"] == 2 and r["frames"] == 0, f"{case['name']}: frames from garbage: {r}"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(sys.argv[2])
