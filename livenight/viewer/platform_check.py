"""Can a Qt window open here? Answered *before* any Qt code runs, because Qt's answer is to abort the process.

Why it is like this:

* PyQt5's wheel bundles Qt but not the X11 libraries its ``xcb`` platform plugin links against. On a fresh
  Linux desktop (or a container) a missing ``libxcb-icccm.so.4`` makes ``QApplication()`` print "Could not load the
  Qt platform plugin xcb" and call ``abort()``: no exception to catch, the whole process (and the recording it was
  writing) dies. The same happens when ``DISPLAY`` names an X server that cannot be reached.
* So this module never imports Qt. It reads the environment, runs ``ldd`` on the plugin to list the shared
  libraries that do not resolve, maps each to its Debian/Ubuntu package (the apt line to paste), and checks that
  the X server's socket accepts a connection. ``probe=True`` adds the one check that cannot lie: a child Python
  creates a ``QGuiApplication`` and exits; if Qt aborts, it aborts there.
* The caller decides what to do with ``ok=False``: the viewer carries on headless, ``livenight doctor`` prints
  the message.

Example:
    >>> from livenight.viewer.platform_check import check_display
    >>> ok, message = check_display()          # doctest: +SKIP
    >>> ok, message                            # doctest: +SKIP
    (False, 'the Qt xcb plugin cannot load: missing libxcb-icccm.so.4 (libxcb-icccm4), ...')
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

#: shared library (soname) → Debian / Ubuntu 22.04 package. Ubuntu 24.04 renamed a few (``libglib2.0-0t64``,
#: ``libpng16-16t64``); apt suggests the new name when given the old one.
SONAME_PACKAGES: dict[str, str] = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libOpenGL.so.0": "libopengl0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libXext.so.6": "libxext6",
    "libbrotlicommon.so.1": "libbrotli1",
    "libbrotlidec.so.1": "libbrotli1",
    "libdbus-1.so.3": "libdbus-1-3",
    "libexpat.so.1": "libexpat1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libpng16.so.16": "libpng16-16",
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libz.so.1": "zlib1g",
}

#: everything PyQt5's xcb plugin (and pyqtgraph's optional OpenGL) needs on a minimal Debian / Ubuntu system
XCB_PACKAGES = ("libxkbcommon-x11-0", "libxcb-icccm4", "libxcb-image0", "libxcb-keysyms1", "libxcb-render-util0",
                "libxcb-xinerama0", "libxcb-xkb1", "libxcb-shape0", "libxcb-randr0", "libxcb-xfixes0", "libgl1",
                "libegl1", "libfontconfig1", "libdbus-1-3")

#: Qt platforms that never talk to a display server (tests, benchmarks, VNC)
HEADLESS_PLATFORMS = ("offscreen", "minimal", "minimalegl", "vnc", "webgl", "linuxfb", "eglfs")

_PLUGIN_FILES = {"xcb": "libqxcb.so", "wayland": "libqwayland-generic.so", "wayland-egl": "libqwayland-egl.so"}

_PROBE = ("import sys\n"
          "from PyQt5.QtGui import QGuiApplication\n"
          "app = QGuiApplication([sys.argv[0]])\n"
          "print(app.platformName())\n")


def qt_platform() -> str:
    """The Qt platform plugin a new QApplication will use (``QT_QPA_PLATFORM``'s first choice, else ``xcb``)."""
    raw = os.environ.get("QT_QPA_PLATFORM", "").strip()
    if not raw:
        return "xcb" if sys.platform.startswith("linux") else sys.platform
    return raw.split(";")[0].split(":")[0].strip().lower()


def plugin_path(name: str = "xcb") -> Path | None:
    """The platform plugin file the installed PyQt5 would load (found without importing Qt), or None."""
    filename = _PLUGIN_FILES.get(name)
    if filename is None:
        return None
    dirs: list[Path] = []
    if os.environ.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        dirs.append(Path(os.environ["QT_QPA_PLATFORM_PLUGIN_PATH"]))
    for entry in os.environ.get("QT_PLUGIN_PATH", "").split(os.pathsep):
        if entry:
            dirs.append(Path(entry) / "platforms")
    spec = importlib.util.find_spec("PyQt5")
    if spec is not None and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        dirs += [pkg / "Qt5" / "plugins" / "platforms", pkg / "Qt" / "plugins" / "platforms"]  # new / old wheels
    dirs += [Path("/usr/lib/x86_64-linux-gnu/qt5/plugins/platforms"),  # Debian's python3-pyqt5
             Path("/usr/lib/aarch64-linux-gnu/qt5/plugins/platforms"), Path("/usr/lib/qt5/plugins/platforms")]
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    return None


def parse_ldd(output: str) -> list[str]:
    """Sonames that ``ldd`` reports as ``not found``, in first-seen order, without duplicates."""
    missing: list[str] = []
    for line in output.splitlines():
        m = re.match(r"\s*(\S+)\s*=>\s*not found", line)
        if m and m.group(1) not in missing:
            missing.append(m.group(1))
    return missing


def missing_libraries(library: str | os.PathLike) -> list[str] | None:
    """Shared libraries ``library`` needs that the dynamic loader cannot find; None when ``ldd`` is unavailable."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        out = subprocess.run([ldd, os.fspath(library)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_ldd(out.stdout + out.stderr)


def packages_for(sonames: list[str]) -> list[str]:
    """Debian / Ubuntu packages providing ``sonames`` (unknown ones keep their soname), without duplicates."""
    out: list[str] = []
    for name in sonames:
        pkg = SONAME_PACKAGES.get(name, name)
        if pkg not in out:
            out.append(pkg)
    return out


def apt_line(packages: list[str]) -> str:
    return "sudo apt-get install -y " + " ".join(packages)


def _x_server_reachable(display: str) -> tuple[bool, str]:
    """Try to open the X server's socket: ``:N`` / ``unix:N`` → /tmp/.X11-unix/XN, ``host:N`` → TCP 6000+N."""
    m = re.fullmatch(r"(?P<host>[^:]*):(?P<num>\d+)(\.\d+)?", display.strip())
    if m is None:
        return False, f"DISPLAY={display!r} is not of the form [host]:N"
    host, num = m.group("host"), int(m.group("num"))
    if host.startswith("/"):  # macOS launchd socket path (XQuartz): cannot be checked this way
        return True, ""
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{num}"
        for address in (path, "\0" + path):  # the file, then Linux's abstract namespace
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                try:
                    s.connect(address)
                    return True, ""
                except OSError:
                    continue
        return False, f"no X server answers on DISPLAY={display} ({path})"
    try:
        with socket.create_connection((host, 6000 + num), timeout=2.0):
            return True, ""
    except OSError as e:
        return False, f"no X server answers on DISPLAY={display} (TCP {host}:{6000 + num}: {e.strerror or e})"


def probe_qt(timeout_s: float = 20.0) -> tuple[bool, str]:
    """Create a QGuiApplication in a child Python: (True, platform name) or (False, why, from its stderr)."""
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"a test QApplication did not start within {timeout_s:g} s"
    except OSError as e:
        return False, f"cannot run {sys.executable} to probe Qt ({e})"
    if out.returncode == 0:
        return True, out.stdout.strip()
    lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "could not" in ln.lower() or "cannot" in ln.lower() or "error" in ln.lower()]
    why = (useful or lines or [f"exit status {out.returncode}"])[0]
    return False, f"a test QApplication failed (exit status {out.returncode}): {why}"


def check_display(probe: bool = False) -> tuple[bool, str]:
    """Whether the live viewer can open a window here, and a one-paragraph explanation.

    Never imports Qt. Checks, in order: PyQt5 and pyqtgraph installed; the Qt platform (``offscreen`` and other
    headless platforms are fine); ``DISPLAY`` / ``WAYLAND_DISPLAY``; the platform plugin's shared libraries (a
    missing one names the Debian package and the apt line); the X server answering. ``probe=True`` finally starts
    a QGuiApplication in a child process (≈0.5 s), which also catches X authorisation failures.

    Returns:
        ``(ok, message)``: when ``ok`` is False, ``message`` says what is missing and how to fix it.
    """
    for module, extra in (("PyQt5", "viewer"), ("pyqtgraph", "viewer")):
        if importlib.util.find_spec(module) is None:
            return False, f"{module} is not installed; pip install 'livenight[{extra}]'"
    platform = qt_platform()
    if platform in HEADLESS_PLATFORMS:
        return True, f"Qt platform '{platform}' (QT_QPA_PLATFORM): windows render off screen"
    if not sys.platform.startswith("linux"):
        return True, f"{sys.platform}: Qt uses the native window system"
    display, wayland = os.environ.get("DISPLAY", ""), os.environ.get("WAYLAND_DISPLAY", "")
    if platform == "xcb" and not display:
        if wayland:
            return False, (f"WAYLAND_DISPLAY={wayland} is set but DISPLAY is not: PyQt5 uses X11 (xcb) by default. "
                           "Enable XWayland, or run with QT_QPA_PLATFORM=wayland")
        return False, "no display: neither DISPLAY nor WAYLAND_DISPLAY is set (use --no-gui, or ssh -X, or Xvfb)"
    if platform.startswith("wayland") and not wayland:
        return False, f"QT_QPA_PLATFORM={platform} but WAYLAND_DISPLAY is not set"
    plugin = plugin_path(platform)
    if plugin is not None:
        missing = missing_libraries(plugin)
        if missing:
            listing = ", ".join(f"{so} ({SONAME_PACKAGES.get(so, '?')})" for so in missing)
            return False, (f"the Qt {platform} plugin cannot load: missing {listing}. Install them with: "
                           f"{apt_line(packages_for(missing))} (everything PyQt5 needs on a fresh Debian/Ubuntu "
                           f"desktop: {apt_line(list(XCB_PACKAGES))})")
    if platform == "xcb":
        reachable, why = _x_server_reachable(display)
        if not reachable:
            return False, why
    if probe:
        started, why = probe_qt()
        if not started:
            return False, why
    where = f"DISPLAY={display}" if platform == "xcb" else f"WAYLAND_DISPLAY={wayland}"
    return True, f"{where}, Qt platform '{platform}': OK" + ("" if plugin else " (plugin libraries not checked)")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def doctor_lines(probe: bool = True) -> tuple[bool, list[str]]:
    """What ``livenight doctor`` prints about the viewer: packages, then the display check. Never imports Qt.

    Returns:
        ``(ok, lines)``: ``ok`` is the display check's verdict.
    """
    lines = []
    for dist, purpose, hint in (("PyQt5", "viewer window", "pip install 'livenight[viewer]'"),
                                ("pyqtgraph", "viewer images", "pip install 'livenight[viewer]'"),
                                ("av", "--video MP4 output", "pip install av")):
        v = _version(dist)
        lines.append(f"{dist:<10} {v}  ({purpose})" if v else f"{dist:<10} missing  ({purpose}): {hint}")
    ok, message = check_display(probe=probe)
    lines.append(f"display    {'ok' if ok else 'unavailable'}: {message}")
    return ok, lines
