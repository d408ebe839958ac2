"""ROS 1 bags (``.bag``) and ROS 2 bags (a rosbag2 folder, its ``metadata.yaml``, a ``.db3`` or an ``.mcap``),
read with ``rosbags`` (pure Python, no ROS install): the ECD / MVSEC / HQF distributions and live recordings.

Event topics: ``dvs_msgs/EventArray`` (rpg_dvs_ros; ``prophesee_event_msgs/EventArray`` has the same layout) and
``event_camera_msgs/EventPacket`` (the ROS 2 event_camera drivers; ``evt3`` payloads, decoded by livenight's
own EVT 3.0 decoder). ``sensor_msgs/Image`` topics are the reference frames (``--save-gt``, ``livenight eval``).

Why it is like this:

* The message definitions of the event types are registered here, so bags that do not carry them (ROS 2 sqlite
  bags) still read; definitions a bag carries take precedence.
* ROS 1 ``dvs_msgs/EventArray`` payloads are parsed with one ``np.frombuffer`` of the packed 13-byte events:
  deserialising through Python objects costs ~1 µs per event, which a 10 M events/s MVSEC bag cannot afford.
  ROS 2 (CDR, with alignment padding) goes through ``rosbags``' deserialiser.
* Event time is the events' own stamps (dvs), in µs; reference frames use ``header.stamp``, so both are ROS time.
  ``EventPacket`` payloads carry sensor time: it is shifted once, by the first packet's ``header.stamp`` minus its
  first event's sensor time, onto ROS time (one constant offset: order and spacing are kept).
* With several event topics the one with most messages is read and a warning names the others; ``--topic``
  chooses. ``livenight info`` lists every topic. The image topic is the one whose name shares the longest prefix
  with the event topic (``/dvs/events`` → ``/dvs/image_raw``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from livenight.errors import MissingDependencyError, SourceError, SourceNotFoundError
from livenight.events import EventPacket, check_sensor_size

from ._columns import DEFAULT_CHUNK_EVENTS, Columns, ColumnStream

#: message definitions registered when the bag does not carry them (ROS 1 syntax; rosbags maps ``time``)
MSG_DEFS = {
    "dvs_msgs/msg/Event": "uint16 x\nuint16 y\ntime ts\nbool polarity\n",
    "dvs_msgs/msg/EventArray": "std_msgs/Header header\nuint32 height\nuint32 width\ndvs_msgs/Event[] events\n",
    "prophesee_event_msgs/msg/Event": "uint16 x\nuint16 y\ntime ts\nbool polarity\n",
    "prophesee_event_msgs/msg/EventArray": ("std_msgs/Header header\nuint32 height\nuint32 width\n"
                                            "prophesee_event_msgs/Event[] events\n"),
    "event_camera_msgs/msg/EventPacket": ("std_msgs/Header header\nuint32 height\nuint32 width\nuint64 seq\n"
                                          "uint64 time_base\nstring encoding\nbool is_bigendian\nuint8[] events\n"),
}
EVENT_TYPES = {"dvs_msgs/msg/EventArray": "dvs", "prophesee_event_msgs/msg/EventArray": "dvs",
               "event_camera_msgs/msg/EventPacket": "packet"}
IMAGE_TYPE = "sensor_msgs/msg/Image"
#: one packed ROS 1 dvs_msgs/Event
_DVS_EVENT = np.dtype([("x", "<u2"), ("y", "<u2"), ("sec", "<u4"), ("nsec", "<u4"), ("p", "u1")])
_HINT = "pip install 'livenight[ros]' (the rosbags package)"


def _rosbags():
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    except ImportError as e:
        raise MissingDependencyError(f"ROS bags need the rosbags package ({e}); {_HINT}") from e
    return AnyReader, Stores, get_types_from_msg, get_typestore


def make_typestore(ros2: bool):
    """A typestore with the ROS distribution's standard messages plus the event messages of :data:`MSG_DEFS`."""
    _, Stores, get_types_from_msg, get_typestore = _rosbags()
    store = get_typestore(Stores.ROS2_HUMBLE if ros2 else Stores.ROS1_NOETIC)
    types = {}
    for name, text in MSG_DEFS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def bag_paths(path: Path) -> tuple[Path, bool]:
    """What ``rosbags`` opens for a user's path, and whether it is ROS 2."""
    if path.is_dir():
        return path, True
    suffix = path.suffix.lower()
    if suffix == ".bag":
        return path, False
    if suffix in (".yaml", ".db3"):
        return path.parent, True
    return path, True  # .mcap: a bare file


def _stamp_ns(raw: bytes | memoryview) -> int:
    """``header.stamp`` of a message that starts with a std_msgs/Header, from its bytes (ROS 1: after ``seq``;
    CDR: after the 4-byte encapsulation), without deserialising the rest."""
    sec, nsec = np.frombuffer(bytes(raw[4:12]), dtype="<u4")
    return int(sec) * 1_000_000_000 + int(nsec)


def dvs_ros1(raw: bytes | memoryview) -> tuple[int, int, np.ndarray]:
    """``(width, height, events)`` of a serialised ROS 1 ``dvs_msgs/EventArray`` (events: :data:`_DVS_EVENT`)."""
    buf = memoryview(raw)
    (frame_len,) = np.frombuffer(buf[12:16], "<u4")
    o = 16 + int(frame_len)
    height, width, n = (int(v) for v in np.frombuffer(buf[o:o + 12], "<u4"))
    need = o + 12 + n * _DVS_EVENT.itemsize
    if need > len(buf):
        raise SourceError(f"an EventArray message announces {n} events but holds {len(buf) - o - 12} bytes of them")
    return width, height, np.frombuffer(buf[o + 12:need], _DVS_EVENT)


def image_to_grey(msg, what: str) -> np.ndarray:
    """A ``sensor_msgs/Image`` as (H, W) uint8."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    enc = str(msg.encoding).lower()
    big = bool(msg.is_bigendian)
    channels = {"mono8": 1, "8uc1": 1, "mono16": 2, "16uc1": 2, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}
    if enc not in channels:
        raise SourceError(f"{what}: image encoding {msg.encoding!r} is not supported (expected mono8, mono16, rgb8, "
                          "bgr8, rgba8 or bgra8)")
    if data.shape[0] < h * step:
        raise SourceError(f"{what}: image holds {data.shape[0]} bytes, expected height x step = {h * step}")
    rows = data[:h * step].reshape(h, step)
    k = channels[enc]
    if k == 2:
        px = rows[:, :2 * w].copy().view(">u2" if big else "<u2")
        return (px >> 8).astype(np.uint8)
    px = rows[:, :k * w].reshape(h, w, k)
    if k == 1:
        return px[:, :, 0].copy()
    rgb = px[:, :, [2, 1, 0]] if enc.startswith("bgr") else px[:, :, :3]
    return np.rint(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


class RosFrames:
    """The messages of one ``sensor_msgs/Image`` topic as :class:`~livenight.drivers.base.ReferenceFrames`: their
    ``header.stamp`` in µs, each image read on demand."""

    def __init__(self, source: "RosbagSource", connection) -> None:
        self._src = source
        self._conn = connection
        self.topic = connection.topic
        bag_ns, stamp_ns = [], []
        for _, ts, raw in source._reader.messages(connections=[connection]):
            bag_ns.append(ts)
            stamp_ns.append(_stamp_ns(raw))
        order = np.argsort(np.asarray(stamp_ns, np.int64), kind="stable")
        self._bag_ns = np.asarray(bag_ns, np.int64)[order]
        self.t_us = np.asarray(stamp_ns, np.int64)[order] // 1000

    def __len__(self) -> int:
        return int(self.t_us.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        ts = int(self._bag_ns[i])
        want = int(self.t_us[i])
        src = self._src
        for _, _, raw in src._reader.messages(connections=[self._conn], start=ts, stop=ts + 1):
            if _stamp_ns(raw) // 1000 == want:
                return image_to_grey(src._deserialize(raw, self._conn.msgtype), f"{src.path}: {self.topic} image {i}")
        raise SourceError(f"{src.path}: {self.topic} image {i} (t={want} µs) could not be read back")


class RosbagSource:
    """Replay the events of a ROS bag as :class:`EventPacket` objects (unpaced).

    Args:
        path: a ``.bag``, a rosbag2 folder (or its ``metadata.yaml`` / ``.db3``), or an ``.mcap`` file.
        topic: the event topic (default: the event topic with most messages).
        sensor_size: ``(width, height)`` when the messages carry none (width = height = 0).
        chunk_events: events per packet.

    Attributes:
        topics: every topic as ``(name, message type, message count)``.
        topic: the event topic read.
        frames: :class:`RosFrames` of the matching ``sensor_msgs/Image`` topic, or ``None``.

    Example:
        >>> with RosbagSource("shapes_6dof.bag", topic="/dvs/events") as src:        # doctest: +SKIP
        ...     n = sum(len(p) for p in src)
    """

    is_live = False
    event_indices = None

    def __init__(self, path: str | os.PathLike, topic: str | None = None, sensor_size: tuple[int, int] | None = None,
                 chunk_events: int = DEFAULT_CHUNK_EVENTS) -> None:
        AnyReader = _rosbags()[0]
        from rosbags.highlevel import AnyReaderError

        self.path = Path(path)
        self.name = self.path.name
        if not self.path.exists():
            raise SourceNotFoundError(f"{self.path}: no such file")
        target, self.ros2 = bag_paths(self.path)
        if self.path.suffix.lower() == ".db3" and not (target / "metadata.yaml").is_file():
            raise SourceError(f"{self.path}: a rosbag2 .db3 is read with its folder's metadata.yaml, which is missing")
        self._typestore = make_typestore(self.ros2)
        self._iterated = False
        self._closed = False
        self._stream: ColumnStream | None = None
        try:
            self._reader = AnyReader([target], default_typestore=self._typestore)
            self._reader.open()
        except (AnyReaderError, OSError, ValueError, KeyError) as e:
            text = " ".join(str(e).split()) or type(e).__name__
            raise SourceError(f"{self.path}: not a readable ROS {'2' if self.ros2 else '1'} bag ({text})") from e
        try:
            self._setup(topic, sensor_size, chunk_events)
        except BaseException:
            self._reader.close()
            raise

    def _setup(self, topic: str | None, sensor_size, chunk_events: int) -> None:
        conns = self._reader.connections
        counts: dict[str, int] = {}
        types: dict[str, str] = {}
        for c in conns:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
            types[c.topic] = c.msgtype
        self.topics = sorted((t, types[t], counts[t]) for t in counts)
        listing = ", ".join(f"{t} ({m})" for t, m, _ in self.topics) or "none"
        events = [t for t, m, _ in self.topics if m in EVENT_TYPES]
        if topic is not None:
            if topic not in types:
                raise SourceError(f"{self.path}: no topic {topic!r} (topics: {listing})")
            if types[topic] not in EVENT_TYPES:
                raise SourceError(f"{self.path}: topic {topic} holds {types[topic]}, expected "
                                  f"{' or '.join(sorted(EVENT_TYPES))} (topics: {listing})")
        elif not events:
            raise SourceError(f"{self.path}: no event topic ({' or '.join(sorted(EVENT_TYPES))}) in this bag "
                              f"(topics: {listing})")
        else:
            topic = max(events, key=lambda t: counts[t])
            if len(events) > 1:
                warnings.warn(f"{self.path}: {len(events)} event topics ({', '.join(events)}); reading {topic} (most "
                              "messages); choose with --topic", stacklevel=4)
        self.topic = topic
        self.kind = EVENT_TYPES[types[topic]]
        self._conns = [c for c in conns if c.topic == topic]
        self.chunk_events = int(chunk_events)
        self.sensor_size = (check_sensor_size(sensor_size, "sensor_size") if sensor_size is not None
                            else self._sensor_from_messages())
        images = [t for t, m, _ in self.topics if m == IMAGE_TYPE]
        self.image_topic = max(images, key=lambda t: (len(os.path.commonprefix([t, topic])), -images.index(t)),
                               default=None)
        self.frames = None
        if self.image_topic is not None:
            frames = RosFrames(self, next(c for c in conns if c.topic == self.image_topic))
            self.frames = frames if len(frames) else None

    def _deserialize(self, raw, msgtype: str):
        store = self._reader.typestore if msgtype in self._reader.typestore.fielddefs else self._typestore
        try:
            if self.ros2:
                return store.deserialize_cdr(raw, msgtype)
            return store.deserialize_ros1(raw, msgtype)
        except Exception as e:  # rosbags raises its own errors, and struct / index errors on short data
            raise SourceError(f"{self.path}: a {msgtype} message does not deserialise ({type(e).__name__}: "
                              f"{' '.join(str(e).split())})") from e

    def _sensor_from_messages(self) -> tuple[int, int]:
        for _, _, raw in self._reader.messages(connections=self._conns):
            msg = self._deserialize(raw, self._conns[0].msgtype) if self.ros2 or self.kind == "packet" else None
            w, h = (int(msg.width), int(msg.height)) if msg is not None else dvs_ros1(raw)[:2]
            if w > 0 and h > 0:
                return w, h
            break
        raise SourceError(f"{self.path}: the messages of {self.topic} give no sensor size (width/height 0); pass "
                          "--sensor-size WxH")

    @classmethod
    def from_uri(cls, uri: str, **options) -> "RosbagSource":
        return cls(uri, **options)

    # ---------------------------------------------------------------- events
    def _columns(self) -> Iterator[Columns]:
        decoder = None
        offset_us = None
        for k, (conn, _, raw) in enumerate(self._reader.messages(connections=self._conns)):
            if self._closed:
                return
            at = f"message {k} of {self.topic}"
            if self.kind == "dvs":
                if self.ros2:
                    msg = self._deserialize(raw, conn.msgtype)
                    n = len(msg.events)
                    x = np.fromiter((e.x for e in msg.events), np.int64, n)
                    y = np.fromiter((e.y for e in msg.events), np.int64, n)
                    t = np.fromiter((e.ts.sec * 1_000_000 + e.ts.nanosec // 1000 for e in msg.events), np.int64, n)
                    p = np.fromiter((e.polarity for e in msg.events), np.uint8, n)
                else:
                    try:
                        _, _, ev = dvs_ros1(raw)
                    except (SourceError, ValueError) as e:
                        raise SourceError(f"{self.path}: {at}: {e}") from e
                    x, y, p = ev["x"], ev["y"], ev["p"].astype(bool)
                    t = ev["sec"].astype(np.int64) * 1_000_000 + ev["nsec"].astype(np.int64) // 1000
                yield Columns(t, x, y, p, at)
                continue
            msg = self._deserialize(raw, conn.msgtype)
            if str(msg.encoding).lower() != "evt3":
                raise SourceError(f"{self.path}: {self.topic} packets use encoding {msg.encoding!r}; livenight "
                                  "decodes 'evt3' (the metavision driver's)")
            if decoder is None:
                from .prophesee_raw import StreamDecoder

                decoder = StreamDecoder("EVT3", self.sensor_size)
            ev = decoder.feed(np.asarray(msg.events, np.uint8).tobytes())
            if not ev.shape[0]:
                continue
            t = ev["t"]
            if offset_us is None:
                stamp = int(msg.header.stamp.sec) * 1_000_000 + int(msg.header.stamp.nanosec) // 1000
                offset_us = stamp - int(t[0])
            yield Columns(t + offset_us, ev["x"], ev["y"], ev["p"], at)

    def __iter__(self) -> Iterator[EventPacket]:
        if self._iterated:
            raise RuntimeError("RosbagSource can be iterated only once; open the source again")
        self._iterated = True
        self._stream = stream = ColumnStream(str(self.path), f"{self.topic} events", self.sensor_size,
                                             self.chunk_events, unit="events")
        return stream.packets(self._columns())

    @property
    def audit(self):
        """Implausible input found so far (None before iteration)."""
        return None if self._stream is None else self._stream.audit

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            self._stream.closed = True
        self._reader.close()

    def __enter__(self) -> "RosbagSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.sensor_size
        return f"RosbagSource({str(self.path)!r}, topic={self.topic!r}, sensor_size={w}x{h})"
