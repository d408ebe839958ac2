"""The live viewer (PyQt5 + pyqtgraph) and its Qt-free helpers.

Importing this package imports no Qt. Qt and pyqtgraph are imported by :mod:`livenight.viewer.window` and
:mod:`livenight.viewer.app` only; :mod:`~livenight.viewer.platform_check` (can a window open here?),
:mod:`~livenight.viewer.display` (auto-exposure, gamma),
:mod:`~livenight.viewer.health` (status line) and :mod:`~livenight.viewer.mailbox` (newest-wins hand-over) are
plain Python and work without a display.

Example:
    >>> from livenight.viewer import check_display
    >>> ok, message = check_display()            # doctest: +SKIP
    >>> from livenight.viewer.app import run_viewer  # imports Qt     # doctest: +SKIP
"""

from __future__ import annotations

from .platform_check import check_display as check_display
from .platform_check import doctor_lines as doctor_lines
