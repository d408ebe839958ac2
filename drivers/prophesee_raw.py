"""Prophesee recordings without the vendor SDK: streaming decoders for RAW (EVT 2.0, EVT 2.1, EVT 3.0) and DAT.

Why it is like this
-------------------
* **Streaming, never a whole file.** A file is read ``chunk_bytes`` at a time into one reused buffer; the
  decoder state (time high part, loop count, row, vector base) and the 0 … word-size−1 bytes of a partial word
  are carried to the next chunk, so any chunking — 2 bytes or 16 MiB, or a live byte stream through
  :class:`StreamDecoder` — decodes to the same events. The word loops are numba kernels in
  ``_prophesee_kernels`` (imported on first decode, so ``import livenight.drivers…`` stays cheap). They write
  straight into :data:`~livenight.events.EVENT_DTYPE` arrays.
* **Time follows the OpenEB HAL exactly** (``formats.md`` §3.4). EVT3: a TIME_HIGH that changes the high part
  resets the low part to 0, a repeated TIME_HIGH keeps it, a TIME_LOW sets the low part even when it goes
  backwards, and a 24-bit wrap (a loop) is counted when the high part drops by ≥ 2048. EVT2 / EVT2.1: 34-bit
  time, a loop when TIME_HIGH drops by ≥ 2^33 µs. DAT: 32-bit time, a loop when it drops by ≥ 2^31 µs. Events
  before the first TIME_HIGH are skipped. Vector words (EVT3 VECT_12 / VECT_8, EVT2.1 masks) expand to one event
  per set bit. OTHERS, CONTINUED, IMU and trigger words are skipped.
* **Decoded order vs time order.** The decoders (:func:`decode_file`, :func:`decode_to_array`,
  :class:`StreamDecoder`) return events *in stream order*, never sorted: with a backwards TIME_LOW (real EVT3
  data has them) or EVT2 low bits out of order, ``t`` may decrease; ``DecodeStats.late_events`` counts such
  events. The sources (:class:`PropheseeRawSource`, :class:`DatSource`) must hand the pipeline non-decreasing
  ``t``, so they keep a **look-behind buffer**: the last ``look_behind_us`` (default 4096 µs, one EVT3
  TIME_HIGH period — the most a TIME_LOW can go back while TIME_HIGH moves forward) of events is held back,
  merged with the next chunk by a *stable* sort (equal timestamps keep stream order) and only then released. An
  event that still arrives older than what was already released (a TIME_HIGH going backwards: corrupt data)
  is **clamped** to the start of the current packet, counted in ``clamped_events`` and reported by a warning at
  the end. For well-formed streams nothing is clamped, so the source yields exactly the decoded events, stably
  sorted by ``t``.
* **Out-of-sensor events are dropped and counted** (the HAL drops y ≥ height; here also x ≥ width, so nothing
  downstream can index outside the sensor): ``DecodeStats.dropped_events`` and a :class:`DecodeWarning` at the
  end of the stream.
* **Geometry.** From the header (``% format EVT3;width=…;height=…`` or ``% geometry WxH``); many real files
  have neither, and then it is inferred — from the plugin name (``hal_plugin_gen3_*`` → 640×480 Gen3,
  ``gen4*`` / ``imx636`` / ``imx646`` → 1280×720, ``genx320`` → 320×320), else from ``sensor_generation``, else
  from the coordinates of the first chunk — with a :class:`GeometryWarning` that says so. ``sensor_size=``
  overrides everything. (OpenEB's sample decoder defaults to 1280×720, wrong for Gen3 files.)
* **Bad input.** A missing file raises :class:`~livenight.errors.SourceNotFoundError`; a file without a ``% ``
  header, an unknown format or a payload that is mostly reserved word types raises
  :class:`~livenight.errors.SourceError`. A **truncated** file (the payload ends inside a word or a DAT record)
  decodes everything before the partial word, then raises :class:`SourceError` naming the byte offset where
  decoding stopped; a source yields every packet (including the held-back events) before raising.

Example:
    >>> from livenight.drivers.prophesee_raw import PropheseeRawSource, decode_to_array
    >>> ev = decode_to_array("gen4_pointsource.raw")                  # doctest: +SKIP
    >>> with PropheseeRawSource("evt2.raw") as src:                   # doctest: +SKIP
    ...     for packet in src:
    ...         ...
"""

from __future__ import annotations

import bisect
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Mapping

import numpy as np

from livenight.checks import FAR_JUMP_US, InputAudit, InputWarning, far_jumps, time_spikes
from livenight.errors import SourceError, SourceNotFoundError
from livenight.events import EVENT_DTYPE, EventPacket, check_sensor_size

from .base import SingleUse

RawFormat = Literal["EVT2", "EVT21", "EVT21_LEGACY", "EVT3"]
DecoderFormat = Literal["EVT2", "EVT21", "EVT21_LEGACY", "EVT3", "DAT"]

#: the RAW encodings this module decodes (``% format`` names; ``EVT21_LEGACY`` = ``EVT21;endianness=legacy``)
SUPPORTED_RAW_FORMATS: tuple[str, ...] = ("EVT2", "EVT21", "EVT21_LEGACY", "EVT3")
DEFAULT_CHUNK_BYTES = 8 << 20
DEFAULT_LOOK_BEHIND_US = 4096

_WORD_BYTES = {"EVT2": 4, "EVT21": 8, "EVT21_LEGACY": 8, "EVT3": 2, "DAT": 8}
_WORD_DTYPE = {"EVT2": np.dtype("<u4"), "EVT21": np.dtype("<u8"), "EVT21_LEGACY": np.dtype("<u8"),
               "EVT3": np.dtype("<u2"), "DAT": np.dtype("<u4")}
#: coordinate bits of each format: a sensor larger than this cannot be encoded
_COORD_LIMIT = {"EVT2": 2048, "EVT21": 2048, "EVT21_LEGACY": 2048, "EVT3": 2048, "DAT": 16384}
_EVT_VERSIONS = {"2.0": "EVT2", "2": "EVT2", "2.1": "EVT21", "3.0": "EVT3", "3": "EVT3"}
_FORMAT_NAMES = {"EVT2": "EVT2", "EVT21": "EVT21", "EVT3": "EVT3"}
#: plugin-name patterns → (width, height), first match wins
_PLUGIN_GEOMETRY = ((re.compile(r"genx320"), (320, 320)),
                    (re.compile(r"gen3"), (640, 480)),
                    (re.compile(r"gen4|imx636|imx646"), (1280, 720)))
#: geometries tried, smallest first, when only the coordinates can tell
_KNOWN_GEOMETRIES = ((320, 320), (640, 480), (1280, 720))
#: a payload whose words are more than this fraction of reserved types (after 4096 words) is not this format
_GARBAGE_FRACTION = 0.05
_GARBAGE_MIN_WORDS = 4096
_MAX_HEADER_BYTES = 1 << 20

_EVT3_TYPE_NAMES = {0x0: "ADDR_Y", 0x1: "ADDR_Y_EM", 0x2: "ADDR_X", 0x3: "VECT_BASE_X", 0x4: "VECT_12",
                    0x5: "VECT_8", 0x6: "TIME_LOW", 0x7: "CONTINUED_4", 0x8: "TIME_HIGH", 0xA: "EXT_TRIGGER",
                    0xD: "IMU", 0xE: "OTHERS", 0xF: "CONTINUED_12"}
_EVT2_TYPE_NAMES = {0x0: "CD_OFF", 0x1: "CD_ON", 0x8: "TIME_HIGH", 0xA: "EXT_TRIGGER", 0xE: "OTHERS",
                    0xF: "CONTINUED"}


class GeometryWarning(UserWarning):
    """The sensor size was not in the header and had to be inferred."""


class DecodeWarning(InputWarning):
    """Events were dropped (outside the sensor, time spikes), clamped (out of order) or words had reserved
    types (see :mod:`livenight.checks`)."""

#: word types each RAW format defines (anything else is reserved: counted, skipped, located for the warning)
_DEFINED_TYPES = {"EVT3": (0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xD, 0xE, 0xF),
                  "EVT2": (0x0, 0x1, 0x8, 0xA, 0xE, 0xF), "EVT21": (0x0, 0x1, 0x8, 0xA, 0xE, 0xF),
                  "EVT21_LEGACY": (0x0, 0x1, 0x8, 0xA, 0xE, 0xF)}
_TYPE_SHIFT = {"EVT3": 12, "EVT2": 28, "EVT21": 60, "EVT21_LEGACY": 28}


# Structured copies of the packed 13-byte EVENT_DTYPE go field by field in numpy (≈ 40× slower than memcpy);
# copying through a same-size void view is a plain byte copy.
_VOID = np.dtype((np.void, EVENT_DTYPE.itemsize))


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype=EVENT_DTYPE)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p.view(_VOID) for p in parts]).view(EVENT_DTYPE)


def _take(events: np.ndarray, index: np.ndarray) -> np.ndarray:
    return events.view(_VOID)[index].view(EVENT_DTYPE)


def _copy(events: np.ndarray) -> np.ndarray:
    return events.view(_VOID).copy().view(EVENT_DTYPE)


def _kernels():
    from . import _prophesee_kernels  # numba: imported on first decode only

    return _prophesee_kernels


# ============================================================================ headers
@dataclass(frozen=True)
class RawHeader:
    """The ASCII header of a Prophesee RAW file.

    Attributes:
        path: the file.
        format: ``"EVT2"``, ``"EVT21"``, ``"EVT21_LEGACY"`` or ``"EVT3"``.
        width, height: sensor size, ``None`` when neither the header nor the plugin name gives it.
        geometry_source: where width/height came from: ``"format"`` (``% format …;width=;height=``),
            ``"geometry"`` (``% geometry WxH``), ``"plugin_name"``, ``"sensor_generation"`` or ``"none"``.
        payload_offset: byte offset of the first binary word.
        fields: every ``% key value`` line (the last wins for repeated keys).
        lines: the header lines as written, without the newline.
    """

    path: Path
    format: str
    width: int | None
    height: int | None
    geometry_source: str
    payload_offset: int
    fields: Mapping[str, str] = field(repr=False)
    lines: tuple[str, ...] = field(repr=False)

    @property
    def sensor_size(self) -> tuple[int, int] | None:
        """``(width, height)`` or ``None``."""
        if self.width is None or self.height is None:
            return None
        return self.width, self.height

    @property
    def geometry_inferred(self) -> bool:
        """True when the size is not written in the header but guessed from the plugin or sensor generation."""
        return self.geometry_source not in ("format", "geometry")


@dataclass(frozen=True)
class DatHeader:
    """The header of a Prophesee DAT file (``% Width``, ``% Height``, ``% Version``, then event type and size)."""

    path: Path
    width: int | None
    height: int | None
    version: int | None
    event_type: int
    event_size: int
    payload_offset: int
    fields: Mapping[str, str] = field(repr=False)
    lines: tuple[str, ...] = field(repr=False)
    format: str = "DAT"

    @property
    def sensor_size(self) -> tuple[int, int] | None:
        if self.width is None or self.height is None:
            return None
        return self.width, self.height

    @property
    def geometry_source(self) -> str:
        return "header" if self.sensor_size is not None else "none"

    @property
    def geometry_inferred(self) -> bool:
        return self.sensor_size is None


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise SourceError(f"{p}: is a directory, expected a Prophesee .raw or .dat file")
    return p


def _is_header_text(line: bytes) -> bool:
    """A header line is text: no control characters except tab and CR, and valid UTF-8. A binary payload that
    happens to start with ``% `` (an EVT3 ADDR_X word can) fails this long before its next newline byte."""
    if any(b < 0x20 and b not in (0x09, 0x0D) for b in line) or 0x7F in line:
        return False
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_text_header(path: Path, kind: str) -> tuple[list[str], dict[str, str], int, bytes]:
    """Parse the ``% key value`` lines at the start of ``path``.

    Returns (lines, fields, offset just after the header, the bytes read). Data begins at the first line that
    does not start with ``% `` (or is not text), or after ``% end``.
    """
    with open(path, "rb") as f:
        blob = f.read(_MAX_HEADER_BYTES)
    if not blob:
        raise SourceError(f"{path}: empty file, expected a Prophesee {kind} file")
    lines: list[str] = []
    fields: dict[str, str] = {}
    pos = 0
    while blob[pos:pos + 2] == b"% " or blob[pos:pos + 2] == b"%\n":
        nl = blob.find(b"\n", pos)
        if nl < 0:
            if len(blob) < _MAX_HEADER_BYTES:
                if _is_header_text(blob[pos:]):
                    raise SourceError(f"{path}: truncated file: the header ends at byte {len(blob)} inside the line "
                                      f"{blob[pos:pos + 60].decode('utf-8', 'replace')!r} (no newline, no payload)")
                break
            raise SourceError(f"{path}: header line at byte {pos} is longer than {_MAX_HEADER_BYTES} bytes; "
                              f"not a Prophesee {kind} file")
        raw = blob[pos:nl]
        if not _is_header_text(raw):
            break
        text = raw.decode("utf-8").rstrip("\r")
        pos = nl + 1
        lines.append(text)
        body = text[2:].strip()
        if body == "end":
            break
        if body:
            key, _, value = body.partition(" ")
            fields[key] = value.strip()
    return lines, fields, pos, blob


def _parse_format_field(value: str) -> tuple[str, dict[str, str]]:
    name, *opts = [part.strip() for part in value.split(";")]
    options = {}
    for opt in opts:
        k, _, v = opt.partition("=")
        options[k.strip().lower()] = v.strip()
    return name, options


def _resolve_raw_format(path: Path, fields: Mapping[str, str]) -> str:
    supported = ", ".join(SUPPORTED_RAW_FORMATS)
    from_format = from_evt = None
    if "format" in fields:
        name, options = _parse_format_field(fields["format"])
        base = _FORMAT_NAMES.get(name.upper())
        if base is None:
            raise SourceError(f"{path}: unsupported event format {name!r} in the header line "
                              f"'% format {fields['format']}' (supported: {supported})")
        if base == "EVT21" and options.get("endianness", "").lower() == "legacy":
            base = "EVT21_LEGACY"
        from_format = base
    if "evt" in fields:
        from_evt = _EVT_VERSIONS.get(fields["evt"].strip())
        if from_evt is None:
            raise SourceError(f"{path}: unsupported event format 'evt {fields['evt']}' in the header "
                              f"(supported: evt 2.0, 2.1, 3.0 = {supported})")
    if from_format and from_evt and from_format.split("_")[0] != from_evt:
        raise SourceError(f"{path}: the header contradicts itself: '% evt {fields['evt']}' ({from_evt}) but "
                          f"'% format {fields['format']}' ({from_format}); pass evt_format= to choose")
    fmt = from_format or from_evt
    if fmt is None:
        keys = ", ".join(fields) or "none"
        raise SourceError(f"{path}: the RAW header names no event format (no '% evt' or '% format' line; "
                          f"keys found: {keys}); pass evt_format= (one of {supported})")
    return fmt


def _geometry_from_fields(fields: Mapping[str, str]) -> tuple[int | None, int | None, str]:
    if "format" in fields:
        _, options = _parse_format_field(fields["format"])
        try:
            w, h = int(options["width"]), int(options["height"])
            if w > 0 and h > 0:
                return w, h, "format"
        except (KeyError, ValueError):
            pass
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", fields.get("geometry", ""))
    if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
        return int(m.group(1)), int(m.group(2)), "geometry"
    plugin = fields.get("plugin_name", "").lower()
    for pattern, (w, h) in _PLUGIN_GEOMETRY:
        if plugin and pattern.search(plugin):
            return w, h, "plugin_name"
    gen = fields.get("sensor_generation", fields.get("generation", "")).strip()
    if gen.startswith("3"):
        return 640, 480, "sensor_generation"
    if gen.startswith("4"):
        return 1280, 720, "sensor_generation"
    return None, None, "none"


def read_raw_header(path: str | os.PathLike) -> RawHeader:
    """Parse the header of a Prophesee RAW file: format, sensor size, payload offset and every key/value.

    Raises:
        SourceNotFoundError: no such file.
        SourceError: not a RAW file (no ``% `` header), unknown or missing event format, truncated header.

    Example:
        >>> read_raw_header("evt3_sample.raw").format                      # doctest: +SKIP
        'EVT3'
    """
    p = _check_path(path)
    lines, fields, offset, blob = _read_text_header(p, "RAW")
    if not lines:
        raise SourceError(f"{p}: not a Prophesee RAW file: it does not start with '% ' header lines "
                          f"(first bytes {blob[:16]!r})")
    fmt = _resolve_raw_format(p, fields)
    w, h, source = _geometry_from_fields(fields)
    return RawHeader(p, fmt, w, h, source, offset, dict(fields), tuple(lines))


def read_dat_header(path: str | os.PathLike) -> DatHeader:
    """Parse the header of a Prophesee DAT file (``% `` lines, then 1 byte event type and 1 byte event size).

    Only CD events (type 0 or 12, 8 bytes) are supported; other types (14 triggers, 40 optical flow) raise.
    """
    p = _check_path(path)
    lines, fields, offset, blob = _read_text_header(p, "DAT")
    if not lines:
        raise SourceError(f"{p}: not a Prophesee DAT file: it does not start with '% ' header lines "
                          f"(first bytes {blob[:16]!r}); headerless legacy DAT files are not supported")
    if "evt" in fields or "format" in fields:
        raise SourceError(f"{p}: this is a Prophesee RAW file ('% evt'/'% format' in the header), not DAT; "
                          "open it with PropheseeRawSource")
    if len(blob) < offset + 2:
        raise SourceError(f"{p}: truncated file: the DAT header ends at byte {len(blob)}, before the event "
                          "type and size bytes")
    ev_type, ev_size = blob[offset], blob[offset + 1]
    if ev_type not in (0, 12):
        raise SourceError(f"{p}: DAT event type {ev_type} is not supported (expected 0 or 12 = CD events; "
                          "14 = triggers, 40 = optical flow)")
    if ev_size != 8:
        raise SourceError(f"{p}: DAT event size {ev_size} bytes, expected 8 for CD events")

    def _int(key: str) -> int | None:
        try:
            v = int(fields[key])
        except (KeyError, ValueError):
            return None
        return v if v > 0 else None

    return DatHeader(p, _int("Width"), _int("Height"), _int("Version"), ev_type, ev_size, offset + 2,
                     dict(fields), tuple(lines))


# ============================================================================ decoding
@dataclass
class DecodeStats:
    """Counters of one decode. ``truncated_at`` is the byte offset (in the file, or in the stream for
    :class:`StreamDecoder`) of a trailing partial word, ``None`` when the stream ended cleanly."""

    events: int = 0
    words: int = 0
    dropped_events: int = 0
    late_events: int = 0
    time_low_backwards: int = 0
    unknown_words: int = 0
    time_loops: int = 0
    truncated_at: int | None = None


class StreamDecoder:
    """Bytes in, events out (in stream order), for any chunking: files, pipes, live USB byte streams.

    Args:
        evt_format: ``"EVT2"``, ``"EVT21"``, ``"EVT21_LEGACY"``, ``"EVT3"`` or ``"DAT"`` (DAT: the records
            after the header's type/size bytes).
        sensor_size: ``(width, height)``; events outside are dropped and counted.

    Example:
        >>> dec = StreamDecoder("EVT3", (1280, 720))                        # doctest: +SKIP
        >>> for block in usb_blocks:                                        # doctest: +SKIP
        ...     events = dec.feed(block)
    """

    def __init__(self, evt_format: DecoderFormat, sensor_size: tuple[int, int]) -> None:
        if evt_format not in _WORD_BYTES:
            raise ValueError(f"evt_format must be one of {', '.join(_WORD_BYTES)} (got {evt_format!r})")
        width, height = check_sensor_size(sensor_size)
        k = _kernels()
        self.format = evt_format
        self.sensor_size = (width, height)
        self.word_bytes = _WORD_BYTES[evt_format]
        self.word_dtype = _WORD_DTYPE[evt_format]
        self._k = k
        self._state = k.new_state()
        self._per_word = k.MAX_EVENTS_PER_WORD[evt_format]
        if evt_format == "EVT3":
            self._kernel = k.decode_evt3
        elif evt_format == "EVT2":
            self._kernel = k.decode_evt2
        elif evt_format == "DAT":
            self._kernel = k.decode_dat
        else:
            legacy = evt_format == "EVT21_LEGACY"
            kern = k.decode_evt21
            self._kernel = lambda w, s, o, wd, ht: kern(w, s, o, wd, ht, legacy)
        self._ratio = 1.0  # events per word seen so far: sizes the output buffers
        self._leftover = b""
        self._words = 0
        self._bytes = 0
        self._events = 0

    # ------------------------------------------------------------------ core
    def decode_words(self, words: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """Decode whole words; yields ``(events, late)`` arrays, ``late`` = events in it that are older than an
        event before them. DAT: ``words`` holds two uint32 per record."""
        per_item = 2 if self.format == "DAT" else 1
        n_items = words.shape[0] // per_item
        pos = 0
        width, height = self.sensor_size
        state = self._state
        while pos < n_items:
            left = n_items - pos
            cap = min(left * self._per_word, int(left * self._ratio * 1.05) + 64) + self._per_word
            out = np.empty(cap, dtype=EVENT_DTYPE)
            late0 = int(state[self._k.S_LATE])
            n, used = self._kernel(words[pos * per_item:], state, out, width, height)
            n, used = int(n), int(used)
            pos += used
            self._words += used
            self._events += n
            if used:
                self._ratio = max(self._events / max(self._words, 1), 0.01)
            if n:
                late = int(state[self._k.S_LATE]) - late0
                yield (out[:n] if n * 2 >= cap else _copy(out[:n])), late

    def feed(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """Decode a block of bytes (any length); a trailing partial word waits for the next block."""
        data = bytes(data)
        if self._leftover:
            data = self._leftover + data
        whole = len(data) - len(data) % self.word_bytes
        self._leftover = data[whole:]
        self._bytes += whole
        words = np.frombuffer(data, dtype=self.word_dtype, count=whole // self.word_dtype.itemsize)
        return _concat([ev for ev, _ in self.decode_words(words)])

    @property
    def pending_bytes(self) -> int:
        """Bytes of a partial word waiting for the rest."""
        return len(self._leftover)

    def stats(self) -> DecodeStats:
        s, k = self._state, self._k
        return DecodeStats(events=self._events, words=self._words, dropped_events=int(s[k.S_DROPPED]),
                           late_events=int(s[k.S_LATE]), time_low_backwards=int(s[k.S_TIME_LOW_BACK]),
                           unknown_words=int(s[k.S_UNKNOWN]), time_loops=int(s[k.S_LOOP_EVENTS]),
                           truncated_at=(self._bytes if self._leftover else None))

    def _check_garbage(self, where: str, offset: int) -> None:
        unknown = int(self._state[self._k.S_UNKNOWN])
        if self._words >= _GARBAGE_MIN_WORDS and unknown > _GARBAGE_FRACTION * self._words:
            raise SourceError(f"{where}: the payload does not decode as {self.format}: {unknown} of the first "
                              f"{self._words} words (up to byte {offset}) have reserved word types; wrong format "
                              "(pass evt_format=) or a corrupt file")


def _infer_geometry(path: Path, fmt: str, offset: int, chunk_bytes: int) -> tuple[int, int]:
    """Smallest known sensor holding every coordinate of the first chunk (or the coordinate range itself)."""
    limit = _COORD_LIMIT[fmt]
    dec = StreamDecoder(fmt, (limit, limit))
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(max(chunk_bytes, 1 << 20))
    ev = dec.feed(data)
    if ev.size == 0:
        return _KNOWN_GEOMETRIES[-1]
    mx, my = int(ev["x"].max()), int(ev["y"].max())
    for w, h in _KNOWN_GEOMETRIES:
        if mx < w and my < h:
            return w, h
    return mx + 1, my + 1


def _resolve_sensor_size(header: RawHeader | DatHeader, sensor_size, chunk_bytes: int,
                         stacklevel: int) -> tuple[int, int]:
    """Explicit override > header > inference (with a GeometryWarning that says how)."""
    if sensor_size is not None:
        return check_sensor_size(sensor_size)
    if header.sensor_size is not None and not header.geometry_inferred:
        return header.sensor_size
    if header.sensor_size is not None:
        key = header.geometry_source
        w, h = header.sensor_size
        warnings.warn(f"{header.path}: the header has no geometry ('% format …;width=;height=' or '% geometry WxH'); "
                      f"using {w}x{h} from {key} {header.fields.get(key, header.fields.get('generation'))!r} "
                      "(override with --sensor-size WxH, in Python sensor_size=(width, height))", GeometryWarning,
                      stacklevel=stacklevel)
        return w, h
    w, h = _infer_geometry(header.path, header.format, header.payload_offset, chunk_bytes)
    warnings.warn(f"{header.path}: no geometry in the header and no known plugin name; using {w}x{h}, the smallest "
                  "known sensor holding the coordinates of the first chunk (override with --sensor-size WxH, in Python "
                  "sensor_size=(width, height))", GeometryWarning, stacklevel=stacklevel)
    return w, h


def _read_header_any(path: str | os.PathLike, evt_format: str | None,
                     kind: Literal["auto", "raw", "dat"] = "auto") -> RawHeader | DatHeader:
    """RAW or DAT: ``kind`` or ``evt_format`` decide; with ``auto``, a ``.dat`` file whose header has no
    ``evt``/``format`` line is DAT, anything else RAW."""
    p = _check_path(path)
    if evt_format == "DAT" or kind == "dat":
        if evt_format not in (None, "DAT"):
            raise ValueError(f"evt_format must be None or 'DAT' for a DAT file (got {evt_format!r})")
        return read_dat_header(p)
    if evt_format is None and kind == "auto" and p.suffix.lower() == ".dat":
        _, fields, _, _ = _read_text_header(p, "DAT")
        if "evt" not in fields and "format" not in fields:
            return read_dat_header(p)
    if evt_format is not None:
        if evt_format not in SUPPORTED_RAW_FORMATS:
            raise ValueError(f"evt_format must be one of {', '.join(SUPPORTED_RAW_FORMATS)} or 'DAT' "
                             f"(got {evt_format!r})")
        lines, fields, offset, blob = _read_text_header(p, "RAW")
        w, h, source = _geometry_from_fields(fields)
        return RawHeader(p, evt_format, w, h, source, offset, dict(fields), tuple(lines))
    return read_raw_header(p)


class FileDecoder:
    """Iterator over the decoded event chunks of one file, in stream order (see :func:`decode_file`).

    ``stats`` is filled in while iterating. At the end, a :class:`DecodeWarning` reports dropped events and
    reserved words, and a truncated payload raises :class:`SourceError` *after* the last chunk was yielded.
    """

    def __init__(self, path: str | os.PathLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 sensor_size: tuple[int, int] | None = None, evt_format: DecoderFormat | None = None,
                 warn: bool = True, kind: Literal["auto", "raw", "dat"] = "auto", _stacklevel: int = 3) -> None:
        if int(chunk_bytes) < 1:
            raise ValueError(f"chunk_bytes must be >= 1 (got {chunk_bytes!r})")
        self.header = _read_header_any(path, evt_format, kind)
        self.path = self.header.path
        self.format = self.header.format
        self.chunk_bytes = int(chunk_bytes)
        self.sensor_size = _resolve_sensor_size(self.header, sensor_size, self.chunk_bytes, _stacklevel + 1)
        limit = _COORD_LIMIT[self.format]
        if self.sensor_size[0] > limit or self.sensor_size[1] > limit:
            raise ValueError(f"sensor_size {self.sensor_size} exceeds what {self.format} can encode "
                             f"({limit}x{limit})")
        self.decoder = StreamDecoder(self.format, self.sensor_size)
        self.stats = DecodeStats()
        #: implausible input found so far; judged before each chunk's events are handed on (livenight.checks)
        self.audit = InputAudit(str(self.path), "records" if self.format == "DAT" else "words", self.format,
                                self.sensor_size)
        self._warn = warn
        self._it = self._chunks()

    def __iter__(self) -> "FileDecoder":
        return self

    def __next__(self) -> np.ndarray:
        return next(self._it)[0]

    def chunks_with_late(self) -> Iterator[tuple[np.ndarray, int]]:
        """Like iterating, but yields ``(events, late)``; ``late`` > 0 means the array is not time-sorted or
        starts before an earlier event."""
        return self._it

    def close(self) -> None:
        """Stop decoding and close the file (also when iteration stopped half-way)."""
        self._it.close()

    def _update_stats(self) -> None:
        s = self.decoder.stats()
        truncated = self.stats.truncated_at
        self.stats = s
        self.stats.truncated_at = truncated

    def _chunks(self) -> Iterator[tuple[np.ndarray, int]]:
        wb = self.decoder.word_bytes
        dtype = self.decoder.word_dtype
        file_size = self.path.stat().st_size
        payload = max(0, file_size - self.header.payload_offset)
        chunk_bytes = max(1, min(self.chunk_bytes, payload))  # a small file gets a small buffer
        buf = bytearray(chunk_bytes + wb)
        view = memoryview(buf)
        offset = self.header.payload_offset  # file offset of buf[0]
        keep = 0  # bytes of a partial word at the front of buf
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            while True:
                got = f.readinto(view[keep:keep + chunk_bytes])
                if not got:
                    break
                total = keep + got
                whole = total - total % wb
                if whole:
                    words = np.frombuffer(buf, dtype=dtype, count=whole // dtype.itemsize)
                    before = self.decoder.stats()
                    parts = list(self.decoder.decode_words(words))
                    self._update_stats()
                    # judge the chunk before any of its events leaves: garbage never reaches the windows
                    self._audit_chunk(words, offset, before, parts, final=offset + total >= file_size)
                    del words
                    if parts:
                        yield (_concat([ev for ev, _ in parts]), sum(late for _, late in parts))
                keep = total - whole
                if keep:
                    buf[:keep] = buf[whole:total]
                offset += whole
        self._update_stats()
        if keep:
            self.stats.truncated_at = offset
        self._finish()

    def _audit_chunk(self, words: np.ndarray, offset: int, before: DecodeStats, parts: list, final: bool) -> None:
        audit, after = self.audit, self.stats
        wb = self.decoder.word_bytes
        audit.items += int(words.shape[0]) // (2 if self.format == "DAT" else 1)
        audit.events += sum(int(ev.shape[0]) for ev, _ in parts)
        reserved = after.unknown_words - before.unknown_words
        if reserved:
            where = None
            if "reserved" not in audit.first_at:
                types = (words >> dtype_shift(words, self.format)) & 0xF
                first = np.flatnonzero(~np.isin(types, _DEFINED_TYPES[self.format]))
                where = f"byte {offset + int(first[0]) * wb}" if first.shape[0] else None
            audit.add("reserved", reserved, where)
        outside = after.dropped_events - before.dropped_events
        audit.add("outside", outside, self._first_outside(words, offset) if outside and
                  "outside" not in audit.first_at else None)
        audit.check(final)

    def _first_outside(self, words: np.ndarray, offset: int) -> str:
        """Where the first out-of-sensor event of a chunk is: exact for DAT and EVT2 (one event per word),
        the chunk's byte range for the vector formats."""
        width, height = self.sensor_size
        wb = self.decoder.word_bytes
        if self.format == "DAT":
            w = words.reshape(-1, 2)[:, 1].astype(np.int64)
            bad = ((w & 0x3FFF) >= width) | (((w >> 14) & 0x3FFF) >= height)
        elif self.format == "EVT2":
            w = words.astype(np.int64)
            bad = ((w >> 28) < 2) & ((((w >> 11) & 0x7FF) >= width) | ((w & 0x7FF) >= height))
        else:
            return f"bytes {offset}..{offset + int(words.nbytes)}"
        first = np.flatnonzero(bad)
        return f"byte {offset + int(first[0]) * wb}" if first.shape[0] else f"bytes {offset}..{offset + words.nbytes}"

    def _finish(self) -> None:
        if self.stats.truncated_at is None:
            self.audit.require_events()
        if self._warn:
            msg = self.audit.summary()
            if msg:
                warnings.warn(f"{self.path}: {msg}", DecodeWarning, stacklevel=3)
        if self.stats.truncated_at is not None:
            size = self.path.stat().st_size
            raise SourceError(f"{self.path}: truncated file: the payload ends inside a {self.format} "
                              f"{'record' if self.format == 'DAT' else 'word'} "
                              f"({size - self.stats.truncated_at} of {self.decoder.word_bytes} bytes); decoded "
                              f"{self.stats.events} events, stopped at byte {self.stats.truncated_at}")


def dtype_shift(words: np.ndarray, fmt: str):
    """The shift that brings a word's 4-bit type to the bottom, as the words' own integer type."""
    return words.dtype.type(_TYPE_SHIFT[fmt])


def decode_file(path: str | os.PathLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                sensor_size: tuple[int, int] | None = None,
                evt_format: DecoderFormat | None = None) -> FileDecoder:
    """Decode a ``.raw`` (EVT 2.0 / 2.1 / 3.0) or ``.dat`` file in chunks of ``chunk_bytes``.

    Yields :data:`EVENT_DTYPE` arrays in stream order (not sorted; see the module docstring). The returned
    iterator has ``header``, ``sensor_size`` and ``stats`` (:class:`DecodeStats`, final after the last chunk).

    Args:
        path: the file.
        chunk_bytes: bytes read per step (any value ≥ 1; results do not depend on it).
        sensor_size: ``(width, height)`` overriding the header.
        evt_format: force the encoding (``"EVT2"``, ``"EVT21"``, ``"EVT21_LEGACY"``, ``"EVT3"``, ``"DAT"``).

    Raises:
        SourceNotFoundError, SourceError: see the module docstring; truncation raises after the last chunk.
    """
    return FileDecoder(path, chunk_bytes, sensor_size, evt_format)


def decode_to_array(path: str | os.PathLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                    sensor_size: tuple[int, int] | None = None,
                    evt_format: DecoderFormat | None = None) -> np.ndarray:
    """All events of a (small) file as one array, in stream order. For tests and small files."""
    dec = FileDecoder(path, chunk_bytes, sensor_size, evt_format)
    return _concat(list(dec))


def count_word_types(path: str | os.PathLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                     evt_format: RawFormat | None = None) -> dict[str, int]:
    """Histogram of word types of a RAW file's payload (diagnostics; the trailing partial word is ignored)."""
    header = _read_header_any(path, evt_format)
    if header.format == "DAT":
        raise ValueError(f"{header.path}: DAT files have no word types")
    fmt = header.format
    dtype = _WORD_DTYPE[fmt]
    shift = {"EVT3": 12, "EVT2": 28, "EVT21": 60, "EVT21_LEGACY": 28}[fmt]
    counts = np.zeros(16, dtype=np.int64)
    wb = _WORD_BYTES[fmt]
    step = max(wb, chunk_bytes - chunk_bytes % wb)
    with open(header.path, "rb") as f:
        f.seek(header.payload_offset)
        while True:
            data = f.read(step)
            if len(data) < wb:
                break
            w = np.frombuffer(data, dtype=dtype, count=len(data) // wb)
            counts += np.bincount((w >> dtype.type(shift)).astype(np.int64) & 0xF, minlength=16)
    names = _EVT3_TYPE_NAMES if fmt == "EVT3" else _EVT2_TYPE_NAMES
    return {names.get(i, f"0x{i:X}"): int(c) for i, c in enumerate(counts) if c}


# ============================================================================ sources
class _PropheseeFileSource(SingleUse):
    """Shared replay logic: decoded chunks → look-behind sort → packets that tile time."""

    is_live = False
    frames = None
    event_indices = None

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int] | None, chunk_bytes: int,
                 look_behind_us: int, evt_format: DecoderFormat | None, kind: Literal["raw", "dat"]) -> None:
        if int(look_behind_us) < 0:
            raise ValueError(f"look_behind_us must be >= 0 (got {look_behind_us!r})")
        self._decoder = FileDecoder(path, chunk_bytes, sensor_size, evt_format, warn=False, kind=kind,
                                    _stacklevel=5)
        self.path = self._decoder.path
        self.header = self._decoder.header
        self.sensor_size = self._decoder.sensor_size
        self.format = self._decoder.format
        self.look_behind_us = int(look_behind_us)
        self.name = self.path.name
        self.clamped_events = 0
        self._closed = False

    @classmethod
    def from_uri(cls, uri: str, **options):
        return cls(uri, **options)

    @property
    def stats(self) -> DecodeStats:
        """Decoder counters (final once iteration ended)."""
        return self._decoder.stats

    @property
    def dropped_events(self) -> int:
        return self._decoder.stats.dropped_events

    @property
    def audit(self) -> InputAudit:
        """Implausible input found so far (see :mod:`livenight.checks`)."""
        return self._decoder.audit

    def _repair(self, ev: np.ndarray, late: int, seen: int, last_t: int | None) -> tuple[np.ndarray, int]:
        """Drop time spikes (corrupt time words) and count far forward jumps, on stream-order events."""
        audit = self._decoder.audit
        keep, n_spikes = time_spikes(ev["t"])
        if keep is not None:
            gone = np.flatnonzero(~keep)
            audit.spikes += n_spikes
            audit.add("spike", int(gone.shape[0]), f"decoded event {seen + int(gone[0])}")
            ev = _take(ev, np.flatnonzero(keep))
            late = max(late, 1)  # order is no longer known: sort
        t = ev["t"]
        n_far, first = far_jumps(t)
        if last_t is not None and t.shape[0] and int(t[0]) - last_t > FAR_JUMP_US:
            n_far, first = n_far + 1, 0
        if n_far:
            audit.add("jump", n_far, f"decoded event {seen + first}")
        return ev, late

    def _packets(self) -> Iterator[EventPacket]:
        size = self.sensor_size
        lb = self.look_behind_us
        audit = self._decoder.audit
        pending: np.ndarray | None = None
        t_start: int | None = None
        boundary: int | None = None  # every released event has t < boundary; later ones must not be older
        error: SourceError | None = None
        seen = 0  # decoded events so far (stream order), for messages
        last_t: int | None = None
        chunks = self._decoder.chunks_with_late()
        try:
            while True:
                try:
                    ev, late = next(chunks)
                    n_decoded = int(ev.shape[0])
                    ev, late = self._repair(ev, late, seen, last_t)
                    seen += n_decoded
                    if ev.shape[0]:
                        last_t = int(ev["t"][-1])
                    audit.check()
                except StopIteration:
                    break
                except SourceError as e:  # truncation (or garbage): release what was decoded, then raise
                    error = e
                    break
                if self._closed:
                    return
                if not ev.shape[0]:
                    continue
                if late:
                    ev = _take(ev, np.argsort(ev["t"], kind="stable"))
                    if boundary is not None:
                        t = ev["t"]
                        n_old = bisect.bisect_left(t, boundary)
                        if n_old:
                            t[:n_old] = boundary
                            self.clamped_events += n_old
                            audit.add("clamped", n_old, f"t={boundary} µs")
                if pending is not None and pending.size:
                    chunk = _concat([pending, ev])
                    if late and int(pending["t"][-1]) > int(ev["t"][0]):
                        chunk = _take(chunk, np.argsort(chunk["t"], kind="stable"))
                else:
                    chunk = ev
                t = chunk["t"]
                cut_t = int(t[-1]) - lb if lb else int(t[-1])
                cut = bisect.bisect_left(t, cut_t)  # np.searchsorted would copy the strided column first
                if cut == 0:
                    pending = chunk
                    continue
                pending = chunk[cut:]
                if t_start is None:
                    t_start = int(t[0])
                yield EventPacket(chunk[:cut], t_start, cut_t, time.monotonic(), size)
                t_start = boundary = cut_t
            if self._closed:
                return
            if error is None:
                try:
                    audit.check(final=True)
                except SourceError as e:
                    error, pending = e, None
            if pending is not None and pending.size:
                if t_start is None:
                    t_start = int(pending["t"][0])
                yield EventPacket(pending, t_start, int(pending["t"][-1]) + 1, time.monotonic(), size)
            if error is None:
                self._decoder._update_stats()
            if error is not None:
                raise error
        finally:  # also when the consumer stops early (--max-frames): say what was repaired so far
            if error is None:
                audit.warn(category=DecodeWarning, stacklevel=3)

    def close(self) -> None:
        self._stop_iteration()  # closes the packet generator: its repair warning comes now, not at GC
        self._decoder.close()

    def __repr__(self) -> str:
        w, h = self.sensor_size
        return f"{type(self).__name__}({str(self.path)!r}, format={self.format}, sensor_size={w}x{h})"


class PropheseeRawSource(_PropheseeFileSource):
    """Replay a Prophesee ``.raw`` file (EVT 2.0 / 2.1 / 3.0) as :class:`EventPacket` objects (unpaced).

    Packets tile time (``t_end_us`` of one is ``t_start_us`` of the next), never split equal timestamps, and
    carry non-decreasing ``t`` (look-behind sort, see the module docstring).

    Args:
        path: the ``.raw`` file.
        sensor_size: ``(width, height)`` overriding the header (and the inference when it has none).
        chunk_bytes: bytes decoded per step; a packet holds roughly one chunk.
        look_behind_us: how far back in time a late event may arrive and still be sorted in (µs).
        evt_format: force the encoding when the header is wrong or silent.

    Example:
        >>> with PropheseeRawSource("gen4_pointsource.raw") as src:        # doctest: +SKIP
        ...     n = sum(len(p) for p in src)
    """

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int] | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, look_behind_us: int = DEFAULT_LOOK_BEHIND_US,
                 evt_format: RawFormat | None = None) -> None:
        super().__init__(path, sensor_size, chunk_bytes, look_behind_us, evt_format, "raw")


class DatSource(_PropheseeFileSource):
    """Replay a Prophesee ``.dat`` file (CD events) as :class:`EventPacket` objects; same contract as
    :class:`PropheseeRawSource`."""

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int] | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, look_behind_us: int = DEFAULT_LOOK_BEHIND_US) -> None:
        super().__init__(path, sensor_size, chunk_bytes, look_behind_us, None, "dat")


# ============================================================================ encoders (tests, benchmarks, export)
def encode_events(events: np.ndarray, evt_format: DecoderFormat, vectorize: bool = True,
                  time_high_every_us: int = 4096) -> bytes:
    """Encode events (in the given order) as an EVT2 / EVT2.1 / EVT3 payload or DAT records (no header).

    Decoding the result gives the same events back (for EVT3, times modulo 2^24 µs plus the counted loops;
    for EVT2/2.1 modulo 2^34 µs). ``t`` must be ≥ 0 and must not go back across a TIME_HIGH period.
    """
    k = _kernels()
    t = np.ascontiguousarray(events["t"], dtype=np.int64)
    x = np.ascontiguousarray(events["x"], dtype=np.int64)
    y = np.ascontiguousarray(events["y"], dtype=np.int64)
    p = np.ascontiguousarray(events["p"], dtype=np.int64)
    n = t.shape[0]
    span = int(t.max() - t.min()) if n else 0
    if n and int(t.min()) < 0:
        raise ValueError("encode_events: timestamps must be >= 0")
    if evt_format == "DAT":
        rec = np.empty((n, 2), dtype="<u4")
        rec[:, 0] = t & 0xFFFFFFFF
        rec[:, 1] = (x & 0x3FFF) | ((y & 0x3FFF) << 14) | ((p & 1) << 28)
        return rec.tobytes()
    gaps = span // max(1, time_high_every_us) + 2
    if evt_format == "EVT3":
        out = np.empty(6 * n + gaps + 4, dtype="<u2")
        m = k.encode_evt3(t, x, y, p, out, bool(vectorize), int(time_high_every_us))
    elif evt_format == "EVT2":
        out = np.empty(2 * n + gaps + 4, dtype="<u4")
        m = k.encode_evt2(t, x, y, p, out, int(time_high_every_us))
    elif evt_format in ("EVT21", "EVT21_LEGACY"):
        out = np.empty(2 * n + gaps + 4, dtype="<u8")
        m = k.encode_evt21(t, x, y, p, out, evt_format == "EVT21_LEGACY", int(time_high_every_us))
    else:
        raise ValueError(f"evt_format must be one of {', '.join(_WORD_BYTES)} (got {evt_format!r})")
    return out[:m].tobytes()


def raw_header_bytes(evt_format: RawFormat, sensor_size: tuple[int, int] | None,
                     extra: Mapping[str, str] | None = None, end: bool = True) -> bytes:
    """A RAW header: ``% evt``, ``% format`` (with geometry when ``sensor_size`` is given), extra keys, ``% end``."""
    evt = {"EVT2": "2.0", "EVT21": "2.1", "EVT21_LEGACY": "2.1", "EVT3": "3.0"}[evt_format]
    name = {"EVT2": "EVT2", "EVT21": "EVT21", "EVT21_LEGACY": "EVT21", "EVT3": "EVT3"}[evt_format]
    fmt = name
    if sensor_size is not None:
        fmt += f";height={int(sensor_size[1])};width={int(sensor_size[0])}"
    if evt_format == "EVT21_LEGACY":
        fmt += ";endianness=legacy"
    lines = [f"% evt {evt}", f"% format {fmt}"]
    if sensor_size is not None:
        lines.append(f"% geometry {int(sensor_size[0])}x{int(sensor_size[1])}")
    lines += [f"% {k} {v}" for k, v in (extra or {}).items()]
    if end:
        lines.append("% end")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_raw(path: str | os.PathLike, events: np.ndarray, evt_format: RawFormat = "EVT3",
              sensor_size: tuple[int, int] | None = None, vectorize: bool = True) -> Path:
    """Write events as a RAW file readable by this module (and, for EVT2/EVT3, by OpenEB)."""
    p = Path(path)
    with open(p, "wb") as f:
        f.write(raw_header_bytes(evt_format, sensor_size))
        f.write(encode_events(events, evt_format, vectorize=vectorize))
    return p


def write_dat(path: str | os.PathLike, events: np.ndarray, sensor_size: tuple[int, int]) -> Path:
    """Write events as a DAT v2 file (CD events, type 12, 8 bytes)."""
    p = Path(path)
    w, h = (int(v) for v in sensor_size)
    with open(p, "wb") as f:
        f.write(f"% Height {h}\n% Version 2\n% Width {w}\n".encode("ascii"))
        f.write(bytes([12, 8]))
        f.write(encode_events(events, "DAT"))
    return p
