"""Live iniVation cameras (DAVIS346, DVXplorer, …) through dv-processing 2.x (``dv.io.camera``).

Why it is like this:

* **Polling, not a thread of its own.** The pipeline already iterates live sources in a producer thread, so
  ``__iter__`` polls the camera (``getNextEventBatch`` never blocks; ``None`` means nothing new) and sleeps
  ``poll_interval_s`` when idle. After ``idle_timeout_s`` without a packet it yields an *empty* packet whose end
  follows the sensor clock (see :mod:`livenight.drivers._live`), so time windows keep completing in the dark.
* **Night options.** The DAVIS has hardware background-activity and refractory filters (set in 250 µs units);
  every camera can use dv's software background-activity filter and a hot-pixel mask (``dv.EventMaskFilter``;
  dv-processing 2.0.4 has no hot-pixel class). Asking for a hardware filter on a camera without one is an error,
  not a silent no-op.
* **Frames.** APS frames (DAVIS) are kept as reference frames, newest ``keep_frames`` only, with exposure-end
  timestamps (``Frame.timestamp`` is the exposure begin in dv-processing).
* **Nothing is lost while the engine loads.** A camera streams from the moment it is opened; a
  :class:`~livenight.drivers._live.ConnectBuffer` drains it until the first iteration, whose first packets are
  those events (``received_events`` / ``dropped_events`` / ``delivered_events`` count them). On by default for
  real cameras; a test double passed as ``camera=`` opts in with ``buffer_from_connect=True``.
* **Unplugging.** ``isRunning()`` turns False when the device goes away. Everything already received is drained
  and yielded, then iteration raises ``SourceError("camera … disconnected")``.
* **Testability.** ``camera=`` takes an already opened camera object (or a zero-argument factory returning one),
  so tests drive the real conversion and timing code with a mock camera that hands out real ``dv.EventStore``
  batches. No camera hardware is needed for anything but the ``open()`` call itself.

URIs: ``davis346`` (the first DAVIS), ``dvxplorer`` (the first DVXplorer), ``davis://`` (the first iniVation
camera of any model), ``davis://SERIAL`` (that serial number).
"""

from __future__ import annotations

import datetime
import time
from typing import Callable, Iterable, Iterator

import numpy as np

from livenight.errors import DeviceNotFoundError, SourceError
from livenight.events import EventPacket

from ._dv import dv_module, exposure_us, frame_to_grey, store_to_events
from ._live import BufferedCounts, ConnectBuffer, LatestFrames, LivePacketizer, delivery_note
from .base import SingleUse

#: URI name -> the dv CameraModel names that match it (None: any model)
_MODELS: dict[str, tuple[str, ...] | None] = {
    "davis346": ("DAVIS", "DAVIS_GEN2"),
    "dvxplorer": ("DVXPLORER", "DVXPLORER_GEN2", "DVXPLORER_M", "DVXPLORER_S"),
    "davis://": None,
}
_HW_FILTER_UNIT_US = 250


def parse_uri(uri: str) -> tuple[str, str | None]:
    """``davis346`` / ``dvxplorer`` / ``davis://`` / ``davis://SERIAL`` -> ``(kind, serial or None)``."""
    text = uri.strip()
    low = text.lower()
    if low in ("davis346", "dvxplorer"):
        return low, None
    if low.startswith("davis://"):
        serial = text[len("davis://"):].strip("/")
        return "davis://", serial or None
    raise ValueError(f"not a DAVIS source: expected davis346, dvxplorer, davis:// or davis://SERIAL (got {uri!r})")


def _describe(desc) -> str:
    model = getattr(getattr(desc, "cameraModel", None), "name", "?")
    return f"{model} {getattr(desc, 'serialNumber', '?')}"


def _matches(desc, kind: str, serial: str | None) -> bool:
    models = _MODELS[kind]
    model = getattr(getattr(desc, "cameraModel", None), "name", "")
    if models is not None and model not in models:
        return False
    return serial is None or str(getattr(desc, "serialNumber", "")) == serial


def list_devices() -> list[dict]:
    """The iniVation cameras connected now, one dict each (for ``livenight devices``).

    Keys: ``uri`` (to open it), ``model``, ``serial``, ``firmware``, ``usb`` ("bus:address").
    """
    dv = dv_module("listing iniVation cameras")
    out = []
    for d in dv.io.camera.discover():
        serial = str(d.serialNumber)
        out.append({"uri": f"davis://{serial}", "model": getattr(d.cameraModel, "name", str(d.cameraModel)),
                    "serial": serial, "firmware": int(d.firmwareVersion),
                    "usb": f"{int(d.busNumber)}:{int(d.devAddress)}"})
    return out


def hot_pixel_mask(sensor_size: tuple[int, int], hot_pixels: Iterable[tuple[int, int]]) -> np.ndarray:
    """(H, W) uint8 mask for ``dv.EventMaskFilter``: 1 = keep, 0 = drop (the listed ``(x, y)`` pixels)."""
    width, height = sensor_size
    mask = np.ones((height, width), dtype=np.uint8)
    for item in hot_pixels:
        x, y = (int(v) for v in item)
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"hot pixel ({x}, {y}) lies outside the {width}x{height} sensor")
        mask[y, x] = 0
    return mask


class DavisSource(BufferedCounts, SingleUse):
    """A live iniVation camera as a stream of :class:`EventPacket` objects.

    Args:
        kind: ``"davis346"``, ``"dvxplorer"`` or ``"davis://"`` (any model); see :meth:`from_uri`.
        serial: open the camera with this serial number.
        camera: an opened camera (``dv.io.camera`` object or a test double), or a zero-argument callable that
            returns one; ``None`` discovers and opens a real camera.
        idle_timeout_s: yield an empty packet after this long without one.
        idle_lag_us: how far behind the extrapolated sensor clock an idle packet ends.
        poll_interval_s: sleep between polls when the camera has nothing new.
        time_interval_us: how often the camera's USB reader commits a batch (``setTimeInterval``; latency).
        hw_ba_filter_us: DAVIS hardware background-activity filter time (rounded to 250 µs; None: camera default).
        hw_refractory_us: DAVIS hardware refractory-period filter time (rounded to 250 µs; None: camera default).
        noise_filter: apply dv's software background-activity filter.
        noise_filter_us: its time window.
        hot_pixels: ``(x, y)`` pixels whose events are dropped (a calibration result).
        keep_frames: APS frames kept as reference frames (the newest N).

    Example:
        >>> with DavisSource.from_uri("davis346", noise_filter=True) as cam:     # doctest: +SKIP
        ...     for packet in cam:
        ...         print(len(packet), packet.t_end_us - packet.t_start_us)
    """

    is_live = True

    def __init__(self, kind: str = "davis://", serial: str | None = None, *, camera=None,
                 idle_timeout_s: float = 0.05, idle_lag_us: int = 20_000, poll_interval_s: float = 0.001,
                 time_interval_us: int | None = 1_000, hw_ba_filter_us: int | None = None,
                 hw_refractory_us: int | None = None, noise_filter: bool = False, noise_filter_us: int = 2_000,
                 hot_pixels: Iterable[tuple[int, int]] = (), keep_frames: int = 8,
                 buffer_from_connect: bool | None = None, buffer_events: int = 50_000_000,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if kind not in _MODELS:
            raise ValueError(f"kind must be one of {', '.join(_MODELS)} (got {kind!r})")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive (got {idle_timeout_s})")
        self.kind, self.serial = kind, serial
        self.idle_timeout_s = float(idle_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self._clock, self._sleep = clock, sleep
        self._closed = False
        self._dv = dv_module("live iniVation cameras")
        if buffer_from_connect is None:
            buffer_from_connect = camera is None
        if camera is None:
            camera = self._open_real(kind, serial)
        elif callable(camera) and not hasattr(camera, "getNextEventBatch"):
            camera = camera()
        self._camera = camera
        self.name = str(camera.getCameraName())
        res = camera.getEventResolution()
        if res is None:
            raise SourceError(f"camera {self.name} reports no event resolution (is its event stream disabled?)")
        self.sensor_size = (int(res[0]), int(res[1]))
        self._configure(time_interval_us, hw_ba_filter_us, hw_refractory_us)
        self._filters = self._make_filters(noise_filter, noise_filter_us, hot_pixels)
        has_frames = bool(getattr(camera, "isFrameStreamAvailable", lambda: False)())
        self.frames: LatestFrames | None = LatestFrames(keep_frames) if has_frames else None
        self._frame_size = self.sensor_size
        if has_frames and hasattr(camera, "getFrameResolution") and camera.getFrameResolution() is not None:
            fres = camera.getFrameResolution()
            self._frame_size = (int(fres[0]), int(fres[1]))
        self.event_indices = None  # the RLED protocol needs a recording; live frames arrive after their events
        self._packetizer = LivePacketizer(self.sensor_size, f"camera {self.name}", idle_lag_us)
        self._received_live = 0
        self._buffer = (ConnectBuffer(camera.getNextEventBatch, self._convert, camera.isRunning,
                                      extra=lambda: self._poll_frames(camera), max_events=buffer_events,
                                      poll_interval_s=self.poll_interval_s, clock=clock)
                        if buffer_from_connect else None)

    @property
    def delivered_events(self) -> int:
        """Events handed out in packets."""
        return self._packetizer.num_events

    # ---------------------------------------------------------------- opening
    def _open_real(self, kind: str, serial: str | None):
        cam_mod = self._dv.io.camera
        found = list(cam_mod.discover())
        match = next((d for d in found if _matches(d, kind, serial)), None)
        if match is None:
            want = {"davis346": "DAVIS346", "dvxplorer": "DVXplorer", "davis://": "iniVation"}[kind]
            listing = ", ".join(_describe(d) for d in found) or "none"
            extra = f" with serial {serial}" if serial else ""
            raise DeviceNotFoundError(f"no DAVIS camera found: wanted {want}{extra} (found: {listing}); check the "
                                      "USB cable and the udev rules, and that no other program holds the camera")
        try:
            return cam_mod.open(match)
        except (IndexError, RuntimeError) as e:
            raise DeviceNotFoundError(f"cannot open camera {_describe(match)} ({e}); is another program using "
                                      "it?") from e

    def _configure(self, time_interval_us, hw_ba_filter_us, hw_refractory_us) -> None:
        cam = self._camera
        if time_interval_us is not None and hasattr(cam, "setTimeInterval"):
            cam.setTimeInterval(datetime.timedelta(microseconds=int(time_interval_us)))
        for value, setter, label in ((hw_ba_filter_us, "setBackgroundActivityFilter", "hw_ba_filter_us"),
                                     (hw_refractory_us, "setRefractoryPeriodFilter", "hw_refractory_us")):
            if value is None:
                continue
            if value < 0:
                raise ValueError(f"{label} must be >= 0 µs (got {value})")
            if not hasattr(cam, setter):
                raise ValueError(f"{label}: camera {self.name} has no hardware filter of that kind (DAVIS only)")
            getattr(cam, setter)(int(round(value / _HW_FILTER_UNIT_US)))

    def _make_filters(self, noise_filter: bool, noise_filter_us: int, hot_pixels) -> list:
        dv = self._dv
        filters = []
        hot = list(hot_pixels)
        if hot:
            filters.append(dv.EventMaskFilter(hot_pixel_mask(self.sensor_size, hot)))
        if noise_filter:
            if noise_filter_us <= 0:
                raise ValueError(f"noise_filter_us must be positive (got {noise_filter_us})")
            filters.append(dv.noise.BackgroundActivityNoiseFilter(
                self.sensor_size, backgroundActivityDuration=datetime.timedelta(microseconds=int(noise_filter_us))))
        return filters

    @classmethod
    def from_uri(cls, uri: str, **options) -> "DavisSource":
        """Open ``davis346``, ``dvxplorer``, ``davis://`` or ``davis://SERIAL``."""
        kind, serial = parse_uri(uri)
        return cls(kind, serial, **options)

    # ---------------------------------------------------------------- capture
    def _convert(self, store) -> np.ndarray:
        for f in self._filters:
            f.accept(store)
            store = f.generateEvents()
        return store_to_events(store, self.sensor_size, f"camera {self.name}")

    def _poll_frames(self, cam) -> None:
        if self.frames is None:
            return
        while True:
            fr = cam.getNextFrame()
            if fr is None:
                return
            self.frames.add(frame_to_grey(fr, self._frame_size), int(fr.timestamp) + exposure_us(fr))

    def _packets(self) -> Iterator[EventPacket]:
        cam, pk, clock = self._camera, self._packetizer, self._clock
        last_yield = clock()
        for ev, host_time_s in (self._buffer.stop() if self._buffer else ()):  # what came before iterating
            pkt = pk.add(ev, host_time_s)
            if pkt is not None:
                last_yield = pkt.host_time_s
                yield pkt
        while not self._closed:
            running = cam.isRunning()  # read before polling, so data that came before a disconnect is drained
            store = cam.getNextEventBatch()
            self._poll_frames(cam)
            if store is not None:
                ev = self._convert(store)
                self._received_live += int(ev.shape[0])
                pkt = pk.add(ev, clock())
                if pkt is None and clock() - last_yield >= self.idle_timeout_s:
                    pkt = pk.idle(clock())  # batches keep coming but yield nothing (all filtered, one long run)
                if pkt is not None:
                    last_yield = pkt.host_time_s
                    yield pkt
                continue
            if not running:
                yield from self._drain(cam)
                raise SourceError(f"camera {self.name} disconnected (unplugged or lost power?); "
                                  f"{delivery_note(self)}")
            now = clock()
            if now - last_yield >= self.idle_timeout_s:
                last_yield = now
                yield pk.idle(now)
            else:
                self._sleep(self.poll_interval_s)

    def _drain(self, cam) -> Iterator[EventPacket]:
        pk = self._packetizer
        while True:
            store = cam.getNextEventBatch()
            if store is None:
                break
            ev = self._convert(store)
            self._received_live += int(ev.shape[0])
            pkt = pk.add(ev, self._clock())
            if pkt is not None:
                yield pkt
        self._poll_frames(cam)
        last = pk.flush(self._clock())
        if last is not None:
            yield last

    @property
    def late_events(self) -> int:
        """Events that arrived after an idle packet had already covered their time (see ``_live``)."""
        return self._packetizer.late_events

    def close(self) -> None:
        """Stop iterating and release the camera (dv closes the USB device when the object is freed)."""
        if self._buffer is not None:
            try:
                self._buffer.stop()
            except Exception:  # noqa: BLE001 - closing: a conversion error of unread data no longer matters
                pass
        self._stop_iteration()  # closing the generator drops its reference to the camera
        self._camera = None
