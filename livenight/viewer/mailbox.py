"""A one-slot, newest-wins mailbox between the reconstruction thread and the display. Pure Python, no Qt.

The writer (reconstruction) never waits: ``put`` replaces whatever is waiting and counts it as not shown. The
reader (the GUI thread) takes the newest item. ``put`` returns True only when the slot had no pending wake-up,
so the writer sends at most one "frame waiting" notification per take: however slow the display, the GUI's
event queue holds at most one such notification, never a backlog of frames.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class NewestMailbox(Generic[T]):
    """One slot; ``put`` overwrites, ``take`` empties. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None
        self._wake_pending = False
        self.put_count = 0  # items offered
        self.taken_count = 0  # items taken
        self.replaced_count = 0  # items overwritten before anyone took them

    def put(self, item: T) -> bool:
        """Store ``item`` (replacing an untaken one); True when the reader must be woken up."""
        with self._lock:
            if self._item is not None:
                self.replaced_count += 1
            self._item = item
            self.put_count += 1
            wake = not self._wake_pending
            self._wake_pending = True
            return wake

    def take(self) -> T | None:
        """The newest item, or None; clears the pending wake-up so the next ``put`` wakes the reader again."""
        with self._lock:
            item, self._item = self._item, None
            self._wake_pending = False
            if item is not None:
                self.taken_count += 1
            return item

    def peek_pending(self) -> bool:
        with self._lock:
            return self._item is not None
