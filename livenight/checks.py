"""Plausibility checks on decoded input, shared by every file reader, so replay and ``livenight info`` agree.

Why it is like this
-------------------
A corrupt recording must never hang, crash or turn into video. The readers cannot tell a bit flip from a real
event one word at a time, but the *amount* of implausible input tells a damaged good file from garbage:

* Each reader counts what it had to repair or drop in an :class:`InputAudit`: words of reserved types, events
  outside the sensor, short excursions of time ("spikes": time leaves by more than ``SPIKE_US`` and comes back,
  the mark of one corrupt time word), events clamped because time went backwards, and far forward jumps that do
  not come back.
* :meth:`InputAudit.check` runs on every chunk *before* its events are handed on: when more than
  ``GARBAGE_FRACTION`` of what was read is implausible (after ``MIN_ITEMS`` items, or at the end of a small
  file), the reader raises one :class:`~livenight.errors.SourceError` naming the file, the counts and the byte
  offset. ``--max-frames 5`` therefore cannot stop the run before the verdict: garbage never yields frames.
* Otherwise the events are kept, and :meth:`InputAudit.warn` emits one :class:`InputWarning` line with the
  counts and the offset of the first problem of each kind, at the end of the stream or when it is closed early.
* A file whose header is valid but that holds no event is an error (:meth:`InputAudit.require_events`), the same
  for every format.
"""

from __future__ import annotations

import warnings

import numpy as np

from .errors import SourceError

#: more than this fraction of implausible words / events means the payload is not this format (or is garbage)
GARBAGE_FRACTION = 0.05
#: items read before a chunk may be judged (a whole small file is judged at its end, from MIN_FINAL_ITEMS on)
MIN_ITEMS = 4096
MIN_FINAL_ITEMS = 16
#: a time excursion larger than this that comes back is a corrupt time word, not a pause of the scene
SPIKE_US = 100_000
#: a forward jump larger than this that does not come back is reported (the windows reset over it)
FAR_JUMP_US = 10_000_000


class InputWarning(UserWarning):
    """A recording had a few implausible words or events; they were dropped or repaired and the rest kept."""


class InputAudit:
    """Counters of implausible input for one file, and the verdict: keep (warn) or give up (error).

    Args:
        what: the file, for messages.
        unit: what ``items`` counts (``"words"``, ``"records"``, ``"events"``).
        fmt: the format name used in the error (``"EVT3"``, ``"aedat4"``, …).

    Example:
        >>> audit = InputAudit("x.raw", "words", "EVT3")
        >>> audit.items += 10_000
        >>> audit.add("reserved", 3, "byte 4711")
        >>> audit.check(final=True)          # 3 of 10,000: kept
        >>> audit.summary()
        'skipped 3 words of reserved types (first at byte 4711)'
    """

    _LABELS = {
        "reserved": "skipped {n} words of reserved types",
        "outside": "dropped {n} events outside the {sensor} sensor",
        "spike": "dropped {n} events in {spikes} time spikes (time left by > {spike:g} s and came back)",
        "clamped": "clamped {n} events older than what was already replayed (time went backwards)",
        "jump": "{n} forward time jumps over {far:g} s",
        "nonfinite": "{n} non-finite values",
        "packets": "skipped {n} corrupt packets",
        "malformed": "skipped {n} malformed rows",
    }

    def __init__(self, what: str, unit: str, fmt: str, sensor_size: tuple[int, int] | None = None) -> None:
        self.what = what
        self.unit = unit
        self.fmt = fmt
        self.sensor_size = sensor_size
        self.items = 0
        self.events = 0
        self.packets = 0  # packets read, damaged ones included (formats made of packets)
        self.counts: dict[str, int] = {}
        self.first_at: dict[str, str] = {}
        self.spikes = 0
        self._warned = False

    def add(self, kind: str, n: int, where: str | None = None) -> None:
        """Count ``n`` problems of ``kind`` (one of the keys of ``_LABELS``); ``where`` = the first one's place."""
        if n <= 0:
            return
        if kind not in self._LABELS:
            raise ValueError(f"unknown audit kind {kind!r} (known: {', '.join(self._LABELS)})")
        self.counts[kind] = self.counts.get(kind, 0) + int(n)
        if where is not None and kind not in self.first_at:
            self.first_at[kind] = where

    @property
    def bad(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """The counts as one clause list (empty when nothing was found)."""
        w, h = self.sensor_size or (0, 0)
        parts = []
        for kind, n in self.counts.items():
            text = self._LABELS[kind].format(n=n, sensor=f"{w}x{h}", spikes=self.spikes, far=FAR_JUMP_US / 1e6,
                                             spike=SPIKE_US / 1e6)
            if kind in self.first_at:
                text += f" (first at {self.first_at[kind]})"
            parts.append(text)
        return "; ".join(parts)

    def check(self, final: bool = False) -> None:
        """Raise :class:`SourceError` when the input read so far is mostly implausible (or, for formats made of
        packets, when more than the same fraction of the packets was damaged)."""
        enough = self.items >= (MIN_FINAL_ITEMS if final else MIN_ITEMS)
        # a damaged packet is skipped whole (nothing of it reaches the windows), so mid-stream only a majority of
        # damaged packets is a verdict; the whole file is judged at its end
        damaged = self.counts.get("packets", 0)
        share = GARBAGE_FRACTION if final else 0.25
        many_packets = self.packets >= (1 if final else 64) and damaged > share * self.packets
        if (enough and self.bad > GARBAGE_FRACTION * self.items) or many_packets:
            self._warned = True  # the error says it all
            raise SourceError(f"{self.what}: the payload does not decode as {self.fmt}: {self.summary()} in the "
                              f"first {self.items} {self.unit}; a corrupt file or the wrong format")

    def require_events(self) -> None:
        """Raise :class:`SourceError` when the file decoded to no event at all."""
        if self.events == 0:
            self._warned = True
            extra = f" ({self.summary()})" if self.counts else ""
            raise SourceError(f"{self.what}: the {self.fmt} file holds no events ({self.items} {self.unit} "
                              f"decoded){extra}")

    def warn(self, category: type[Warning] = InputWarning, stacklevel: int = 3) -> None:
        """One warning line with the counts, once, when anything was found."""
        if self._warned or not self.counts:
            return
        self._warned = True
        warnings.warn(f"{self.what}: {self.summary()}; kept {self.events - self.removed} events", category,
                      stacklevel=stacklevel)

    @property
    def removed(self) -> int:
        """Decoded events that were not kept (time spikes)."""
        return self.counts.get("spike", 0)


def time_spikes(t: np.ndarray, spike_us: int = SPIKE_US) -> tuple[np.ndarray | None, int]:
    """Find runs of events whose time leaves by more than ``spike_us`` and comes back (stream order).

    A run between two jumps of opposite sign, where the time after the run lies within ``spike_us`` of the time
    before it, is a spike (a corrupt time word). Returns ``(keep, n_spikes)``: ``keep`` is a boolean mask, or
    ``None`` when there is no spike.

    Example:
        >>> keep, n = time_spikes(np.array([0, 10, 9_000_000, 9_000_001, 20, 30]))
        >>> keep.tolist(), n
        ([True, True, False, False, True, True], 1)
    """
    t = np.asarray(t, dtype=np.int64)
    if t.shape[0] < 3:
        return None, 0
    d = np.diff(t)
    j = np.flatnonzero(np.abs(d) > spike_us)
    if j.shape[0] < 2:
        return None, 0
    a, b = j[:-1], j[1:]  # run = events a+1 .. b
    spike = (np.sign(d[a]) != np.sign(d[b])) & (np.abs(t[b + 1] - t[a]) <= spike_us)
    if not spike.any():
        return None, 0
    mark = np.zeros(t.shape[0] + 1, dtype=np.int64)
    np.add.at(mark, a[spike] + 1, 1)
    np.add.at(mark, b[spike] + 1, -1)
    keep = np.cumsum(mark[:-1]) == 0
    return keep, int(spike.sum())


def far_jumps(t: np.ndarray, far_us: int = FAR_JUMP_US) -> tuple[int, int | None]:
    """Forward steps larger than ``far_us`` in ``t`` (after spikes were removed): ``(count, index of first)``."""
    t = np.asarray(t, dtype=np.int64)
    if t.shape[0] < 2:
        return 0, None
    big = np.flatnonzero(np.diff(t) > far_us)
    return int(big.shape[0]), (int(big[0]) + 1 if big.shape[0] else None)


def nonfinite(values: np.ndarray) -> int | None:
    """Index of the first NaN / inf in a float array, else None (integers are always finite)."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        return None
    bad = np.flatnonzero(~np.isfinite(values))
    return int(bad[0]) if bad.shape[0] else None


# ---------------------------------------------------------------------------- command-line checks (before a run)
def check_device(device: str, dtype: str = "float32") -> None:
    """Refuse a torch device or dtype this machine cannot run, with one line saying what would work.

    ``cpu`` with ``float32`` is always fine and imports nothing; anything else asks torch.
    """
    from .errors import LivenightError

    if device == "cpu" and dtype in ("float32", "auto", "bfloat16"):
        return  # bfloat16 runs on every CPU (fast where the CPU has AMX / AVX512-BF16)
    try:
        import torch
    except ImportError:
        raise LivenightError(f"--device {device}: torch is not installed (pip install torch)") from None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise LivenightError(f"--device {device!r} is not a device livenight can use (expected cpu, cuda, cuda:N "
                             "or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = "without CUDA" if torch.version.cuda is None else f"for CUDA {torch.version.cuda}, but no GPU is usable"
            raise LivenightError(f"--device {device}: this torch {torch.__version__} was built {built}; use "
                                 "--device cpu, or install the torch build that matches your GPU driver")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise LivenightError(f"--device {device}: there {'is' if n == 1 else 'are'} only {n} CUDA "
                                 f"device{'s' if n != 1 else ''} (cuda:0 … cuda:{n - 1})")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise LivenightError(f"--device {device}: MPS is not available in this torch / on this machine; "
                                 "use --device cpu")
    elif dev.type != "cpu":
        raise LivenightError(f"--device {device}: livenight runs on cpu, cuda[:N] or mps (got {dev.type!r})")
    if dtype == "float16" and dev.type == "cpu":
        raise LivenightError(f"--dtype {dtype} needs a GPU (--device cuda); on a CPU use --dtype bfloat16 or float32")


def check_output_dir(path: str | None, option: str = "--out") -> None:
    """``path`` is (or can be created as) a writable folder; checked before a run, not after it."""
    import os
    from pathlib import Path

    from .errors import LivenightError

    if not path:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise LivenightError(f"{option} {path}: exists and is not a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LivenightError(f"{option} {path}: {probe} is a file, so the folder cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LivenightError(f"{option} {path}: {probe} is not writable")


def check_output_file(path: str | None, option: str = "--video") -> None:
    """``path`` can be written: its folder exists and is writable, and it is not a folder itself."""
    import os
    from pathlib import Path

    from .errors import LivenightError

    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise LivenightError(f"{option} {path}: is a folder, expected a file name")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise LivenightError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise LivenightError(f"{option} {path}: not writable")


def live_summary(source, stats) -> str:
    """The closing line's numbers for a live source: what the device sent, what the pipeline got, what it made.

    ``source`` may have ``received_events`` / ``delivered_events`` / ``dropped_events`` (the live drivers do);
    ``stats`` is the pipeline's (``events_in``, ``frames``, ``skipped_windows``, ``dropped_events``).
    Example: ``received 66075 events (0 dropped before the engine was ready), 66075 ingested, 25 frames, 3 windows
    skipped, 0 events dropped by the ring``.
    """
    parts = []
    received = getattr(source, "received_events", None)
    if received is not None:
        early = getattr(source, "dropped_events", 0)
        parts.append(f"received {received} events ({early} dropped before the engine was ready)")
    parts.append(f"{stats.events_in} ingested")
    parts.append(f"{stats.frames} frames")
    parts.append(f"{stats.skipped_windows} windows skipped")
    parts.append(f"{stats.dropped_events} events dropped by the ring")
    return ", ".join(parts)


def release_checked(audit: "InputAudit", ev: np.ndarray, ahead_t: np.ndarray, last_t: int | None,
                    where) -> tuple[np.ndarray | None, int | None]:
    """Judge a chunk of decoded events before it leaves a reader, with the last released time before it and the
    next chunk's times after it: drop time spikes, count far jumps, clamp what is older than the last released
    event, then the audit's verdict on garbage. ``where(i)`` names the place of the chunk's event ``i`` in the file
    (for warnings). Returns ``(events or None when nothing is left, the new last released time)``."""
    t = ev["t"]
    n = int(t.shape[0])
    before = [] if last_t is None else [last_t]
    keep, n_spikes = time_spikes(np.concatenate([np.asarray(before, np.int64), t, ahead_t]))
    if keep is not None:
        keep = keep[len(before):len(before) + n]
        if not keep.all():
            gone = np.flatnonzero(~keep)
            audit.spikes += n_spikes
            audit.add("spike", int(gone.shape[0]), where(int(gone[0])))
            ev = ev[keep]
            t = ev["t"]
    if t.shape[0]:
        n_far, first = far_jumps(t)
        if last_t is not None and int(t[0]) - last_t > FAR_JUMP_US:
            n_far, first = n_far + 1, 0
        audit.add("jump", n_far, where(first or 0))
        floor = np.maximum.accumulate(t if last_t is None else np.maximum(t, last_t))
        late = np.flatnonzero(t < floor)
        if late.shape[0]:
            audit.add("clamped", int(late.shape[0]), where(int(late[0])))
            ev = ev.copy()
            ev["t"] = floor
    audit.check()
    if not ev.shape[0]:
        return None, last_t
    return ev, int(ev["t"][-1])
