"""The viewer window (PyQt5 + pyqtgraph): reconstruction large, events and reference beside it, a status line.

Why it is like this:

* Drawing uses pyqtgraph's fastest path (formats.md §7): uint8 arrays handed to ``ImageItem.setImage`` with
  ``autoLevels=False`` and no levels, row-major, in a ``GraphicsLayoutWidget`` whose view boxes are
  ``invertY`` (row 0 at the top) and aspect-locked. All conversion to uint8 happens before (display.py). No
  OpenGL: it fails off screen and buys nothing at these sizes.
* The window only draws and turns keys into action names; it knows nothing about threads or the pipeline. The
  controller (:class:`livenight.viewer.app.LiveViewer`) connects :attr:`ViewerWindow.action` and calls
  :meth:`ViewerWindow.show_images` from the GUI thread.
* Keys are read by the window itself: its children never take focus, so pyqtgraph's view boxes cannot swallow
  ``+`` / ``-`` (they use them for zoom history).
"""

from __future__ import annotations

import numpy as np

from livenight._optional import require

require("PyQt5.QtWidgets", "the live viewer")
pg = require("pyqtgraph", "the live viewer")
from PyQt5 import QtCore, QtGui, QtWidgets  # noqa: E402  (after the install-hint check)

Qt = QtCore.Qt

#: key → action name. "help", "fullscreen" and "quit" are handled by the window; all are also emitted.
KEYMAP: dict[int, str] = {
    Qt.Key_Space: "pause",
    Qt.Key_R: "reset",
    Qt.Key_S: "screenshot",
    Qt.Key_V: "record",
    Qt.Key_Plus: "longer",
    Qt.Key_Equal: "longer",  # '+' without shift on US layouts
    Qt.Key_Minus: "shorter",
    Qt.Key_Underscore: "shorter",
    Qt.Key_A: "auto_exposure",
    Qt.Key_G: "gamma",
    Qt.Key_F: "fullscreen",
    Qt.Key_F11: "fullscreen",
    Qt.Key_H: "help",
    Qt.Key_Question: "help",
    Qt.Key_Q: "quit",
    Qt.Key_Escape: "quit",
}

#: the help overlay, in display order
KEY_HELP: tuple[tuple[str, str], ...] = (
    ("Space", "pause / resume the display"),
    ("R", "reset the recurrent state (next window)"),
    ("S", "save a screenshot of the window (PNG)"),
    ("V", "start / stop recording the shown video (MP4)"),
    ("+ / −", "double / halve the event window"),
    ("A", "auto-exposure on / off (display only)"),
    ("G", "display gamma 1 → 1.5 → 2.2"),
    ("F", "fullscreen on / off"),
    ("H", "show / hide this help"),
    ("Q / Esc", "quit"),
)


def help_text() -> str:
    width = max(len(k) for k, _ in KEY_HELP)
    return "\n".join(f"{k:>{width}}   {what}" for k, what in KEY_HELP)


class ViewerWindow(QtWidgets.QWidget):
    """Reconstruction, event window, reference frame and a status line.

    Args:
        sensor_size: ``(width, height)``, used for the initial window size.
        title: window title.
        show_events: add the event-window panel.
        show_reference: add the reference-frame panel (recordings with APS / ground-truth frames).

    Signals:
        action(str): a key was pressed (a name from :data:`KEYMAP`).
        closed(): the window is closing (close button, Q, Esc, or :meth:`close`).
    """

    action = QtCore.pyqtSignal(str)
    closed = QtCore.pyqtSignal()

    def __init__(self, sensor_size: tuple[int, int] = (346, 260), title: str = "livenight",
                 show_events: bool = True, show_reference: bool = False,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setFocusPolicy(Qt.StrongFocus)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("k")
        self.view.setFocusPolicy(Qt.NoFocus)
        self.status = QtWidgets.QLabel("starting …")
        self.status.setWordWrap(True)
        self.status.setFocusPolicy(Qt.NoFocus)
        self.status.setTextInteractionFlags(Qt.NoTextInteraction)
        self.status.setStyleSheet("QLabel { background: #111; color: #ddd; padding: 4px; }")
        self.status.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        # a fixed height (3 lines), so a status text that wraps differently never resizes the pictures
        self.status.setFixedHeight(3 * self.status.fontMetrics().lineSpacing() + 10)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.status, 0)

        side = show_events or show_reference
        grid = self.view.ci.layout
        self._label("reconstruction", row=0, col=0)
        side_rows = 2 * (int(show_events) + int(show_reference))  # a label row and a picture row per panel
        self.recon_vb, self.recon_item = self._panel(row=1, col=0, rowspan=max(1, side_rows - 1))
        self.event_vb = self.event_item = self.ref_vb = self.ref_item = None
        row = 0
        if show_events:
            self._label("events (ON red, OFF blue)", row=row, col=1)
            self.event_vb, self.event_item = self._panel(row=row + 1, col=1)
            row += 2
        if show_reference:
            self._label("reference frame", row=row, col=1)
            self.ref_vb, self.ref_item = self._panel(row=row + 1, col=1)
        for r in range(grid.rowCount()):
            grid.setRowStretchFactor(r, r % 2)  # labels keep their height, pictures share the rest
        if side:
            grid.setColumnStretchFactor(0, 2)
            grid.setColumnStretchFactor(1, 1)
        self._shapes: dict[int, tuple[int, ...]] = {}

        mono = QtGui.QFont("monospace")
        mono.setStyleHint(QtGui.QFont.TypeWriter)
        self.help = QtWidgets.QLabel(help_text(), self.view)
        self.help.setFont(mono)
        self.help.setStyleSheet("QLabel { background: rgba(0, 0, 0, 200); color: white; padding: 12px; "
                                "border: 1px solid #666; }")
        self.help.setFocusPolicy(Qt.NoFocus)
        self.help.move(12, 12)
        self.help.adjustSize()
        self.help.hide()

        width, height = (int(v) for v in sensor_size)
        cols = 1.5 if side else 1.0
        scale = min(6.0, max(0.5, 1000.0 / (cols * width)))
        self.resize(int(cols * width * scale), int(height * scale) + 20 + self.status.height())

    def _label(self, text: str, row: int, col: int) -> None:
        label = self.view.addLabel(text, row=row, col=col, color="#aaa", size="9pt")
        label.setMaximumHeight(20)

    def _panel(self, row: int, col: int, rowspan: int = 1):
        vb = self.view.addViewBox(row=row, col=col, rowspan=rowspan, lockAspect=True, invertY=True,
                                  enableMouse=False, enableMenu=False)
        item = pg.ImageItem(axisOrder="row-major")
        vb.addItem(item)
        return vb, item

    # ------------------------------------------------------------------ drawing
    def _set(self, vb, item, image: np.ndarray) -> None:
        item.setImage(image, autoLevels=False)
        if self._shapes.get(id(item)) != image.shape[:2]:
            self._shapes[id(item)] = image.shape[:2]
            vb.setRange(xRange=(0, image.shape[1]), yRange=(0, image.shape[0]), padding=0)

    def show_images(self, reconstruction: np.ndarray, events: np.ndarray | None = None,
                    reference: np.ndarray | None = None) -> None:
        """Draw uint8 pictures: (H, W) reconstruction, (H, W, 3) events, (H, W) reference (None: unchanged)."""
        self._set(self.recon_vb, self.recon_item, reconstruction)
        if events is not None and self.event_item is not None:
            self._set(self.event_vb, self.event_item, events)
        if reference is not None and self.ref_item is not None:
            self._set(self.ref_vb, self.ref_item, reference)

    def set_status(self, text: str) -> None:
        if text != self.status.text():
            self.status.setText(text)

    # ------------------------------------------------------------------ view actions
    def toggle_help(self) -> None:
        self.help.setVisible(not self.help.isVisible())
        self.help.raise_()

    def toggle_fullscreen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.showFullScreen()

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802 (Qt override)
        name = KEYMAP.get(event.key())
        if name is None:
            super().keyPressEvent(event)
            return
        event.accept()
        if name == "help":
            self.toggle_help()
        elif name == "fullscreen":
            self.toggle_fullscreen()
        self.action.emit(name)
        if name == "quit":
            self.close()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self.closed.emit()
        super().closeEvent(event)
