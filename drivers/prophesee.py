"""Live Prophesee cameras (EVK4 and other Metavision devices).

Why it is like this:

* **Two backends, both optional.** The Metavision SDK (``metavision_sdk_stream``: ``Camera.from_first_available``
  / ``Camera.from_serial`` + ``CameraStreamSlicer``) is Prophesee's own driver but a vendor install, not on
  PyPI. ``neuromorphic-drivers`` (``pip install neuromorphic-drivers``) is the pip-only alternative with its own
  USB implementation. ``backend="auto"`` takes the SDK when importable, else neuromorphic-drivers, else raises
  :class:`MissingDependencyError` explaining both routes. Neither is imported anywhere else in livenight.
* **Slices are time-based.** The SDK slicer hands out fixed-duration slices (``slice_us``), empty ones included,
  each ending at ``slice.t``; a packet is exactly one slice, ``[previous end, slice.t)``, so the clock ticks
  without an idle timer. neuromorphic-drivers hands out variable packets and ``None`` on its
  ``iterator_timeout``; those go through the same :class:`~livenight.drivers._live.LivePacketizer` as the DAVIS
  (held-back equal-timestamp runs, idle packets on the lagged sensor clock).
* **Conversion.** Metavision ``EventCD`` is ``x u2, y u2, p i2 (0/1), t i8`` µs; neuromorphic-drivers'
  ``dvs_events`` is ``t u8, x u2, y u2, on bool``. Both become :data:`EVENT_DTYPE` once, here.
* **Nothing is lost while the engine loads.** The camera streams from the moment it is opened; an
  :class:`~livenight.drivers._live.IteratorBuffer` takes its slices / packets on a thread until the first
  iteration, which starts with them (``received_events`` / ``dropped_events`` / ``delivered_events``). On by
  default for real cameras; an injected ``slicer=`` opts in with ``buffer_from_connect=True``.
* **Testability.** ``slicer=`` (with ``sensor_size=``) injects any iterable of slice-like objects (``.t``,
  ``.events``); tests use a mock slicer. Without Prophesee hardware and SDK, the camera-opening code paths are
  untested; they follow the documented SDK 5.x and neuromorphic-drivers APIs.

URIs: ``evk4`` (the first Prophesee camera available; the model is not checked) and ``prophesee://`` or
``prophesee://SERIAL``.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator, Literal

import numpy as np

from livenight._optional import has
from livenight.errors import DeviceNotFoundError, MissingDependencyError, SourceError
from livenight.events import EVENT_DTYPE, EventPacket

from ._live import BufferedCounts, IteratorBuffer, LivePacketizer, delivery_note
from .base import SingleUse

Backend = Literal["auto", "metavision", "neuromorphic_drivers"]

MISSING_MESSAGE = (
    "live Prophesee cameras need the Metavision SDK (module metavision_sdk_stream) or neuromorphic-drivers, and "
    "neither can be imported. The Metavision SDK is a vendor install, not on PyPI (Ubuntu packages or Windows "
    "installer from Prophesee, or build OpenEB); the pip-only alternative is `pip install neuromorphic-drivers`.")

#: neuromorphic-drivers device names that are Prophesee cameras
_ND_PROPHESEE_PREFIXES = ("prophesee", "ids_ueye", "silky")


def parse_uri(uri: str) -> str | None:
    """``evk4`` / ``prophesee://`` / ``prophesee://SERIAL`` -> the serial number or None."""
    text = uri.strip()
    if text.lower() == "evk4":
        return None
    if text.lower().startswith("prophesee://"):
        return text[len("prophesee://"):].strip("/") or None
    raise ValueError(f"not a Prophesee source: expected evk4, prophesee:// or prophesee://SERIAL (got {uri!r})")


def cd_to_events(cd: np.ndarray, sensor_size: tuple[int, int] | None, what: str) -> np.ndarray:
    """Convert Metavision ``EventCD`` (x, y, p, t) or neuromorphic-drivers (t, x, y, on) to :data:`EVENT_DTYPE`."""
    names = cd.dtype.names or ()
    if "p" in names:
        pol = cd["p"]
    elif "on" in names:
        pol = cd["on"]
    else:
        raise SourceError(f"{what}: events with fields {names}, expected x, y, t and p (or on)")
    ev = np.empty(cd.shape[0], dtype=EVENT_DTYPE)
    if ev.size == 0:
        return ev
    x, y = cd["x"], cd["y"]
    if sensor_size is not None:
        width, height = sensor_size
        bad = np.flatnonzero((x >= width) | (y >= height))
        if bad.size:
            j = int(bad[0])
            raise SourceError(f"{what}: event at (x={int(x[j])}, y={int(y[j])}) lies outside the "
                              f"{width}x{height} sensor")
    t = cd["t"]
    if t.dtype.kind == "u" and t.size and int(t.max()) > np.iinfo(np.int64).max:
        raise SourceError(f"{what}: timestamp {int(t.max())} µs does not fit in int64")
    ev["t"] = t
    ev["x"] = x
    ev["y"] = y
    ev["p"] = pol != 0
    return ev


class PropheseeSource(BufferedCounts, SingleUse):
    """A live Prophesee camera as a stream of :class:`EventPacket` objects.

    Args:
        serial: open this camera (None: the first available).
        backend: ``"auto"``, ``"metavision"`` or ``"neuromorphic_drivers"``.
        slicer: an already opened slicer (any iterable of objects with ``.t`` = slice end µs and ``.events`` =
            EventCD array), e.g. a test double; needs ``sensor_size``.
        sensor_size: ``(width, height)``; read from the camera when it is opened here.
        slice_us: slice duration for the Metavision slicer.
        idle_timeout_s: neuromorphic-drivers: iterator timeout, i.e. the longest gap between packets.
        idle_lag_us: neuromorphic-drivers: how far behind the extrapolated sensor clock an idle packet ends.

    Example:
        >>> with PropheseeSource.from_uri("evk4") as cam:      # doctest: +SKIP
        ...     for packet in cam:
        ...         print(len(packet))
    """

    is_live = True

    def __init__(self, serial: str | None = None, *, backend: Backend = "auto", slicer: Iterable | None = None,
                 sensor_size: tuple[int, int] | None = None, slice_us: int = 10_000, idle_timeout_s: float = 0.05,
                 idle_lag_us: int = 20_000, buffer_from_connect: bool | None = None, buffer_events: int = 50_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if slice_us <= 0:
            raise ValueError(f"slice_us must be positive (got {slice_us})")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive (got {idle_timeout_s})")
        self.serial = serial
        self.slice_us = int(slice_us)
        self.idle_timeout_s = float(idle_timeout_s)
        self._clock = clock
        self._closed = False
        self._device = None  # neuromorphic-drivers device (a context manager)
        self.frames = None
        self.event_indices = None
        if slicer is not None:
            if sensor_size is None:
                raise ValueError("an injected slicer needs sensor_size=(width, height)")
            self.backend = "slicer"
            self._slicer = slicer
            self.sensor_size = (int(sensor_size[0]), int(sensor_size[1]))
            self.name = f"prophesee://{serial or ''}"
        else:
            self.backend = self._pick_backend(backend)
            if self.backend == "metavision":
                self._open_metavision(serial)
            else:
                self._open_nd(serial, sensor_size)
        self._packetizer = LivePacketizer(self.sensor_size, self.name, idle_lag_us)
        self._received_live = 0
        self._delivered = 0
        if buffer_from_connect is None:
            buffer_from_connect = slicer is None
        self._source_iter = iter(self._device if self.backend == "neuromorphic_drivers" else self._slicer)
        convert = self._convert_nd if self.backend == "neuromorphic_drivers" else self._convert_slice
        self._buffer = (IteratorBuffer(self._source_iter, convert, buffer_events, clock) if buffer_from_connect
                        else None)

    def _convert_slice(self, s) -> tuple[np.ndarray, int]:
        return cd_to_events(np.asarray(s.events), self.sensor_size, self.name), int(s.t)

    def _convert_nd(self, item) -> tuple[np.ndarray | None, None]:
        _status, packet = item
        arr = None
        if packet is not None:
            if hasattr(packet, "get"):
                arr = packet.get("dvs_events", packet.get("polarity_events"))
            else:
                arr = getattr(packet, "polarity_events", None)
        if arr is None or len(arr) == 0:
            return None, None
        return cd_to_events(np.asarray(arr), self.sensor_size, self.name), None

    def _converted(self) -> Iterator[tuple[np.ndarray | None, object, float]]:
        """``(events, payload, host_time_s)``: what the buffer took before iteration, then the live items."""
        convert = self._convert_nd if self.backend == "neuromorphic_drivers" else self._convert_slice
        if self._buffer is not None:
            yield from self._buffer.stop()
            if self._buffer.ended:
                return
        for item in self._source_iter:
            if self._closed:
                return
            ev, payload = convert(item)
            self._received_live += 0 if ev is None else int(ev.shape[0])
            yield ev, payload, self._clock()

    @property
    def delivered_events(self) -> int:
        """Events handed out in packets."""
        return self._packetizer.num_events if self.backend == "neuromorphic_drivers" else self._delivered

    @staticmethod
    def _pick_backend(backend: str) -> str:
        if backend not in ("auto", "metavision", "neuromorphic_drivers"):
            raise ValueError(f"backend must be 'auto', 'metavision' or 'neuromorphic_drivers' (got {backend!r})")
        if backend in ("auto", "metavision") and has("metavision_sdk_stream"):
            return "metavision"
        if backend in ("auto", "neuromorphic_drivers") and has("neuromorphic_drivers"):
            return "neuromorphic_drivers"
        if backend == "metavision":
            raise MissingDependencyError("metavision_sdk_stream cannot be imported; the Metavision SDK is a vendor "
                                         "install, not on PyPI (or use backend='neuromorphic_drivers' after "
                                         "`pip install neuromorphic-drivers`)")
        if backend == "neuromorphic_drivers":
            raise MissingDependencyError("neuromorphic_drivers cannot be imported; `pip install neuromorphic-drivers`")
        raise MissingDependencyError(MISSING_MESSAGE)

    # ---------------------------------------------------------------- Metavision SDK (not run here: no SDK)
    def _open_metavision(self, serial: str | None) -> None:
        import metavision_sdk_stream as mv  # vendor SDK, optional

        try:
            camera = mv.Camera.from_serial(serial) if serial else mv.Camera.from_first_available()
        except Exception as e:  # the SDK raises its own exception types
            which = f"with serial {serial}" if serial else "at all"
            raise DeviceNotFoundError(f"no Prophesee camera found {which} ({e}); check the USB cable, the udev "
                                      "rules and that no other program holds the camera") from e
        self.sensor_size = (int(camera.width()), int(camera.height()))
        self.name = f"prophesee://{serial or ''}"
        self._slicer = mv.CameraStreamSlicer(camera.move(), mv.SliceCondition.make_n_us(self.slice_us))

    # ---------------------------------------------------------------- neuromorphic-drivers (not run here)
    def _open_nd(self, serial: str | None, sensor_size: tuple[int, int] | None) -> None:
        import neuromorphic_drivers as nd  # pip-only alternative, optional

        try:
            listed = list(nd.list_devices())
        except Exception as e:  # it raises RuntimeError("Other error") without USB access
            raise DeviceNotFoundError(f"cannot list USB devices through neuromorphic-drivers ({e})") from e
        names = [(str(getattr(getattr(d, "name", ""), "value", getattr(d, "name", ""))), str(getattr(d, "serial", "")))
                 for d in listed]
        wanted = [n for n in names if n[0].lower().startswith(_ND_PROPHESEE_PREFIXES)
                  and (serial is None or n[1] == serial)]
        if not wanted:
            listing = ", ".join(f"{n} {s}" for n, s in names) or "none"
            extra = f" with serial {serial}" if serial else ""
            raise DeviceNotFoundError(f"no Prophesee camera found{extra} (found: {listing})")
        self._device = nd.open(serial=wanted[0][1], iterator_timeout=self.idle_timeout_s)
        self.name = f"prophesee://{wanted[0][1]}"
        props = getattr(self._device, "properties", None)
        props = props() if callable(props) else props
        width = getattr(props, "width", None)
        height = getattr(props, "height", None)
        if width and height:
            self.sensor_size = (int(width), int(height))
        elif sensor_size is not None:
            self.sensor_size = (int(sensor_size[0]), int(sensor_size[1]))
        else:
            self.sensor_size = (1280, 720)  # EVK4 / EVK3 HD (IMX636): the supported Prophesee devices

    @classmethod
    def from_uri(cls, uri: str, **options) -> "PropheseeSource":
        """Open ``evk4``, ``prophesee://`` or ``prophesee://SERIAL``."""
        return cls(parse_uri(uri), **options)

    # ---------------------------------------------------------------- iteration
    def _packets(self) -> Iterator[EventPacket]:
        return self._nd_packets() if self.backend == "neuromorphic_drivers" else self._slice_packets()

    def _slice_packets(self) -> Iterator[EventPacket]:
        cursor: int | None = None
        last_t: int | None = None
        for ev, t_end, host_time_s in self._converted():
            if self._closed:
                return
            if ev.size:
                t = ev["t"]
                if (last_t is not None and int(t[0]) < last_t) or np.any(t[1:] < t[:-1]):
                    raise SourceError(f"{self.name}: events out of time order in the slice ending at t={t_end} µs")
                if int(t[-1]) >= t_end:
                    raise SourceError(f"{self.name}: the slice ending at t={t_end} µs holds an event at "
                                      f"t={int(t[-1])} µs")
                last_t = int(t[-1])
            if cursor is None:
                cursor = t_end - self.slice_us
                if ev.size:
                    cursor = min(cursor, int(ev["t"][0]))
            start, cursor = cursor, max(cursor, t_end)
            self._delivered += int(ev.shape[0])
            yield EventPacket(ev, start, cursor, host_time_s, self.sensor_size)
        if not self._closed:
            raise SourceError(f"{self.name}: the camera stream ended (camera unplugged?); {delivery_note(self)}")

    def _nd_packets(self) -> Iterator[EventPacket]:
        pk = self._packetizer
        for ev, _, now in self._converted():
            if self._closed:
                return
            if ev is None:
                yield pk.idle(now)
                continue
            pkt = pk.add(ev, now)
            if pkt is not None:
                yield pkt
        last = pk.flush(self._clock())
        if last is not None:
            yield last
        if not self._closed:
            raise SourceError(f"{self.name}: the camera stream ended (camera unplugged?); {delivery_note(self)}")

    def close(self) -> None:
        if self._buffer is not None:
            try:
                self._buffer.stop()
            except Exception:  # noqa: BLE001 - closing: an error of unread data no longer matters
                pass
        self._stop_iteration()
        if self._device is not None:
            device, self._device = self._device, None
            exit_ = getattr(device, "__exit__", None)
            if exit_ is not None:
                exit_(None, None, None)
        self._slicer = None
