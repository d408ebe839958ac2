"""Event sources (drivers), installed as ``livenight.drivers``; opened by name, URI or file extension.

The registry maps a key to ``"module:Class"`` plus an install hint; the module is imported on first use, so
``import livenight.drivers`` costs nothing and a missing optional package fails with the hint.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from livenight.errors import MissingDependencyError, SourceNotFoundError, UnknownSourceError

from .base import Source as Source

#: key -> (target "module:Class", install hint). Keys: URI schemes, camera names and file extensions.
_DAVIS = ("livenight.drivers.davis:DavisSource", "pip install 'livenight[davis]'")
_PROPHESEE = ("livenight.drivers.prophesee:PropheseeSource",
              "install the Metavision SDK (a vendor install, not on PyPI) or pip install neuromorphic-drivers")
_ROS = ("livenight.drivers.rosbag:RosbagSource", "pip install 'livenight[ros]'")
_KNOWN: dict[str, tuple[str, str]] = {
    ".aedat4": ("livenight.drivers.aedat4:Aedat4Source", "pip install aedat"),
    ".bag": _ROS,
    ".csv": ("livenight.drivers.tabular:TabularSource", ""),
    ".dat": ("livenight.drivers.prophesee_raw:DatSource", ""),
    ".db3": _ROS,
    ".h5": ("livenight.drivers.rled:RledSource", ""),
    ".hdf5": ("livenight.drivers.rled:RledSource", ""),
    ".mcap": _ROS,
    ".npy": ("livenight.drivers.tabular:TabularSource", ""),
    ".npz": ("livenight.drivers.tabular:TabularSource", ""),
    ".raw": ("livenight.drivers.prophesee_raw:PropheseeRawSource", ""),
    ".txt": ("livenight.drivers.text:TextSource", ""),
    ".yaml": _ROS,
    ".zip": ("livenight.drivers.text:TextSource", ""),
    "davis346": _DAVIS,
    "davis://": _DAVIS,
    "dvxplorer": _DAVIS,
    "evk4": _PROPHESEE,
    "prophesee://": _PROPHESEE,
    "tcp://": ("livenight.drivers.network:NetworkSource", "pip install 'livenight[davis]'"),
}
assert list(_KNOWN) == sorted(_KNOWN), "keep the driver table sorted"


def known_sources() -> list[str]:
    """Names, schemes and extensions that :func:`open_source` accepts."""
    return list(_KNOWN)


def _key_of(uri: str) -> str:
    if "://" in uri:
        return uri.split("://", 1)[0].lower() + "://"
    if (Path(uri) / "metadata.yaml").is_file():  # a rosbag2 folder
        return ".yaml"
    suffix = Path(uri).suffix.lower()
    if suffix:
        return suffix
    return uri.lower()


def open_source(uri: str | os.PathLike, **options) -> Source:
    """Open an event source, e.g. ``city_0000.h5``.

    Raises:
        UnknownSourceError: no driver handles the name, scheme or extension (the message lists the known ones).
        SourceNotFoundError: a file path that does not exist.
        MissingDependencyError: the driver's optional package is missing (the message says what to install).
    """
    uri = os.fspath(uri)
    key = _key_of(uri)
    if key not in _KNOWN:
        raise UnknownSourceError(f"unknown source {uri!r}: no driver for {key!r} (known: {', '.join(_KNOWN)})")
    target, hint = _KNOWN[key]
    if key.startswith(".") and not Path(uri).exists():
        raise SourceNotFoundError(f"{uri}: no such file")
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MissingDependencyError(f"source {uri!r} needs a package that is missing ({e}); {hint}") from e
    cls = getattr(module, cls_name)
    return cls.from_uri(uri, **_options_for(cls, options))


#: options the CLI and the Python API give every source; a driver that has no use for one ignores it
SHARED_OPTIONS = ("columns", "sensor_size", "topic", "ts_unit")


def _options_for(cls, options: dict) -> dict:
    """Drop shared options the driver does not take (and None values); anything else goes through as given."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in options.items()
            if v is not None and (k not in SHARED_OPTIONS or takes_all or k in params)}
