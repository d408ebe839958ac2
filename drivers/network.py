"""Events streamed over TCP by DV / dv-processing (``dv.io.NetworkWriter``), read with ``dv.io.NetworkReader``.

Why it is like this:

* The reader is polled like a camera: ``getNextEventBatch`` returns ``None`` when nothing has arrived (it does
  not block), so ``__iter__`` sleeps ``poll_interval_s`` between polls and yields an empty packet after
  ``idle_timeout_s`` without data, ending at the lagged sensor-clock estimate (:mod:`livenight.drivers._live`).
* ``isRunning()`` turns False when the server goes away. Whatever already arrived is drained and yielded, then
  iteration raises ``SourceError("… server disconnected …")``.
* **Nothing is lost while the engine loads.** Events are drained from the moment of connection by a
  :class:`~livenight.drivers._live.ConnectBuffer` and handed over as the first packets of the iteration;
  ``received_events``, ``dropped_events`` (only if more than ``buffer_events`` waited) and ``delivered_events``
  give the closing message its numbers.
* dv's reader wants a numeric address, so the host name is resolved here first. The connection is made in the
  constructor; a refused port fails at once with :class:`NetworkSourceError` (a ``SourceError`` that is also a
  ``ConnectionError``). An unreachable host blocks inside dv-processing until the operating system's TCP
  connect timeout: dv's constructor offers no timeout.
* The server side is not livenight's business, but note dv-processing's pitfall: destroying a
  ``NetworkWriter`` while a client is connected never returns (formats.md §1.6). Tests run the writer in a
  subprocess and kill it.

URI: ``tcp://HOST:PORT`` (IPv6 as ``tcp://[::1]:PORT``).
"""

from __future__ import annotations

import socket
import time
from typing import Callable, Iterator
from urllib.parse import urlsplit

from livenight.errors import SourceError
from livenight.events import EventPacket

from ._dv import dv_module, store_to_events
from ._live import ConnectBuffer, LivePacketizer, delivery_note
from .base import SingleUse


class NetworkSourceError(SourceError, ConnectionError):
    """The DV event server refused the connection or is unreachable."""


def parse_uri(uri: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> ``(host, port)``."""
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != "tcp" or not parts.hostname:
        raise ValueError(f"expected tcp://HOST:PORT (got {uri!r})")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or not 0 < port < 65536:
        raise ValueError(f"expected tcp://HOST:PORT with a port 1-65535 (got {uri!r})")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"expected tcp://HOST:PORT with nothing after the port (got {uri!r})")
    return parts.hostname, port


def _resolve(host: str, port: int, uri: str) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise NetworkSourceError(f"{uri}: cannot resolve host {host!r} ({e.strerror})") from e
    # prefer IPv4: DV servers usually listen on 0.0.0.0 / 127.0.0.1
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return infos[0][4][0]


class NetworkSource(SingleUse):
    """Events from a DV network stream (``tcp://HOST:PORT``) as :class:`EventPacket` objects.

    Args:
        host, port: the server.
        idle_timeout_s: yield an empty packet after this long without one.
        idle_lag_us: how far behind the extrapolated sensor clock an idle packet ends.
        poll_interval_s: sleep between polls when nothing has arrived.

    Example:
        >>> with NetworkSource.from_uri("tcp://127.0.0.1:7777") as src:     # doctest: +SKIP
        ...     for packet in src:
        ...         print(len(packet))
    """

    is_live = True

    def __init__(self, host: str, port: int, *, idle_timeout_s: float = 0.05, idle_lag_us: int = 20_000,
                 poll_interval_s: float = 0.001, buffer_events: int = 50_000_000,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive (got {idle_timeout_s})")
        self.uri = f"tcp://{host}:{port}" if ":" not in host else f"tcp://[{host}]:{port}"
        self.name = self.uri
        self.idle_timeout_s = float(idle_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self._clock, self._sleep = clock, sleep
        self._closed = False
        dv = dv_module("reading DV network streams")
        address = _resolve(host, port, self.uri)
        try:
            self._reader = dv.io.NetworkReader(address, int(port))
        except RuntimeError as e:
            msg = str(e).split(" [", 1)[0]  # drop boost's source-location suffix
            raise NetworkSourceError(f"{self.uri}: cannot connect ({msg}); is a DV event server listening on "
                                     "that port?") from e
        reader = self._reader
        if not reader.isEventStreamAvailable():
            raise SourceError(f"{self.uri}: the server sends no event stream (a frame, IMU or trigger stream?)")
        res = reader.getEventResolution()
        if res is None:
            raise SourceError(f"{self.uri}: the server's event stream has no resolution")
        self.sensor_size = (int(res[0]), int(res[1]))
        self.camera_name = str(reader.getCameraName())
        self.frames = None
        self.event_indices = None
        self._packetizer = LivePacketizer(self.sensor_size, self.uri, idle_lag_us)
        self._received_live = 0
        self._buffer = ConnectBuffer(reader.getNextEventBatch, self._convert, reader.isRunning,
                                     max_events=buffer_events, poll_interval_s=self.poll_interval_s, clock=clock)

    def _convert(self, store):
        return store_to_events(store, self.sensor_size, self.uri)

    @property
    def received_events(self) -> int:
        """Events received from the server so far (including any dropped while waiting for the first iteration)."""
        return self._buffer.received_events + self._received_live

    @property
    def dropped_events(self) -> int:
        """Events dropped before the first iteration because more than ``buffer_events`` were waiting."""
        return self._buffer.dropped_events

    @property
    def delivered_events(self) -> int:
        """Events handed out in packets."""
        return self._packetizer.num_events

    @classmethod
    def from_uri(cls, uri: str, **options) -> "NetworkSource":
        """Connect to ``tcp://HOST:PORT``."""
        host, port = parse_uri(uri)
        return cls(host, port, **options)

    def _packets(self) -> Iterator[EventPacket]:
        reader, pk, clock = self._reader, self._packetizer, self._clock
        last_yield = clock()
        for ev, host_time_s in self._buffer.stop():  # what arrived between connecting and now, first
            pkt = pk.add(ev, host_time_s)
            if pkt is not None:
                last_yield = pkt.host_time_s
                yield pkt
        while not self._closed:
            running = reader.isRunning()  # read before polling, so data that came before a disconnect is drained
            store = reader.getNextEventBatch()
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
                while (store := reader.getNextEventBatch()) is not None:
                    ev = self._convert(store)
                    self._received_live += int(ev.shape[0])
                    pkt = pk.add(ev, clock())
                    if pkt is not None:
                        yield pkt
                last = pk.flush(clock())
                if last is not None:
                    yield last
                raise SourceError(f"{self.uri}: the server disconnected; {delivery_note(self)}")
            now = clock()
            if now - last_yield >= self.idle_timeout_s:
                last_yield = now
                yield pk.idle(now)
            else:
                self._sleep(self.poll_interval_s)

    @property
    def late_events(self) -> int:
        return self._packetizer.late_events

    def close(self) -> None:
        """Disconnect (the client side of dv's stream closes without the server-side hang)."""
        try:
            self._buffer.stop()
        except Exception:  # noqa: BLE001 - closing: a conversion error of unread data no longer matters
            pass
        self._stop_iteration()
        self._reader = None
