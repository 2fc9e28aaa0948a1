"""python-can's `virtual` interface on virtual time.

A `can.Notifier` reads a virtual bus on its own thread and hands each frame
to the event loop with `call_soon_threadsafe`. On a `VirtualTimeLoop` that
thread runs in real time, so without help the clock could jump past a frame
that is still on its way. `CountingVirtualBus` counts every frame from the
moment a sender queues it until its reader thread asks for the next one
(by then the frame's listeners have run), and `attach(loop)` installs it
as the `virtual` interface and tells the loop not to jump while any frame is
in flight to a live reader thread.

Frames therefore take zero virtual time, and every frame sent before a jump
is delivered before it. Within one virtual instant the order in which a
reader thread's callbacks interleave with the loop's other callbacks is still
up to the OS scheduler.
"""
from __future__ import annotations

import queue
import threading
import weakref

import can.interfaces
from can.interfaces.virtual import VirtualBus, channels_lock

_count_lock = threading.Lock()
_buses: "weakref.WeakSet[CountingVirtualBus]" = weakref.WeakSet()


class _CountingQueue(queue.Queue):
    """A receive queue that counts frames queued and not yet finished by its reader."""

    def __init__(self, maxsize: int = 0):
        super().__init__(maxsize)
        self.in_flight = 0

    def put(self, item, block=True, timeout=None):
        with _count_lock:
            self.in_flight += 1
        try:
            super().put(item, block, timeout)
        except queue.Full:
            with _count_lock:
                self.in_flight -= 1
            raise


class CountingVirtualBus(VirtualBus):
    """A python-can VirtualBus whose frames in flight to a reader thread can be counted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        counting = _CountingQueue(self.queue.maxsize)
        with channels_lock:
            self.channel[self.channel.index(self.queue)] = counting
        self.queue = counting
        self._held = False  # the last frame recv() returned: its listeners may still be running
        self._reader: threading.Thread | None = None
        _buses.add(self)

    def _recv_internal(self, timeout):
        self._reader = threading.current_thread()
        if self._held:  # the reader came back for more: the previous frame is handled
            self._held = False
            with _count_lock:
                self.queue.in_flight -= 1
        msg, filtered = super()._recv_internal(timeout)
        if msg is not None:
            self._held = True
        return msg, filtered

    def in_flight(self) -> bool:
        """True while a frame is queued or being handled by a live reader thread other than ours."""
        reader = self._reader
        return (self._open and self.queue.in_flight > 0 and reader is not None
                and reader is not threading.current_thread() and reader.is_alive())


def frames_in_flight() -> bool:
    return any(bus.in_flight() for bus in list(_buses))


def attach(loop) -> None:
    """Make `interface="virtual"` buses counting ones and hold `loop`'s clock while frames are in flight,
    until the loop closes."""
    backends = can.interfaces.BACKENDS
    previous = backends.get("virtual")
    backends["virtual"] = (__name__, CountingVirtualBus.__name__)
    loop.add_busy_check("can-virtual", frames_in_flight)

    def detach():
        loop.remove_busy_check("can-virtual")
        if previous is None:
            backends.pop("virtual", None)
        else:
            backends["virtual"] = previous

    loop.call_on_close(detach)
