"""Hybrid logical clock (Kulkarni et al. 2014) and its fixed-width timestamp text.

A timestamp is (milliseconds, counter, node id), ordered in that order. Its text form
``MMMMMMMMMMMMMMM:CCCCCCCCC:NNNN…`` (15-digit milliseconds, 9-digit counter, node id
left-padded with ``0`` to 36 characters) sorts as strings exactly as the clock orders.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import PydsqliteError, UsageError

MILLIS_DIGITS = 15
COUNTER_DIGITS = 9
NODE_WIDTH = 36
MAX_MILLIS = 10**MILLIS_DIGITS - 1
MAX_COUNTER = 10**COUNTER_DIGITS - 1
DEFAULT_MAX_DRIFT_MS = 60_000
_NODE = re.compile(r"[0-9A-Za-z_-]{1,36}")
_TEXT = re.compile(rf"([0-9]{{{MILLIS_DIGITS}}}):([0-9]{{{COUNTER_DIGITS}}}):([0-9A-Za-z_-]{{{NODE_WIDTH}}})")
"""ASCII digits only: ``\\d`` would take other scripts' digits, which ``int()`` reads but which sort, as text,
above every real timestamp (such a register would win every merge for ever)."""


BASELINE = f"{0:0{MILLIS_DIGITS}d}:{0:0{COUNTER_DIGITS}d}:{'0' * NODE_WIDTH}"
"""The timestamp of values that existed before LWW was switched on (or were written outside pydsqlite):
older than any real write, identical on every replica."""


SETTLED_NODE = "-" * NODE_WIDTH
"""The node id of settlement timestamps (``successor``): the id that sorts before every other, which no
clock may take."""


def successor(text: str) -> str:
    """A timestamp just after ``text`` that no clock issues: the next counter value (or millisecond)
    under ``SETTLED_NODE``. A clock that has seen ``text`` issues only later ones, so a write made
    after seeing a state beats what is stamped with the successor of that state."""
    millis, counter = int(text[:MILLIS_DIGITS]), int(text[MILLIS_DIGITS + 1 : MILLIS_DIGITS + 1 + COUNTER_DIGITS])
    if counter < MAX_COUNTER:
        return f"{millis:0{MILLIS_DIGITS}d}:{counter + 1:0{COUNTER_DIGITS}d}:{SETTLED_NODE}"
    return f"{millis + 1:0{MILLIS_DIGITS}d}:{0:0{COUNTER_DIGITS}d}:{SETTLED_NODE}"


class ClockError(PydsqliteError):
    """A timestamp is malformed, too far in the future, or the counter would overflow.

    Examples:
        >>> from pydsqlite import HLC, ClockError, Timestamp
        >>> clock = HLC("node-a", wall_clock=lambda: 1_000)
        >>> try:
        ...     clock.receive(Timestamp(900_000, 0, "node-b"))  # 899 s ahead of this clock's wall time
        ... except ClockError as error:
        ...     print(error)
        remote timestamp 000000000900000:000000000:000000000000000000000000000000node-b is 899000 ms ahead of the local clock (more than max_drift_ms=60000); refused
        >>> clock.last.millis  # unchanged
        0
    """


@dataclass(frozen=True, order=True)
class Timestamp:
    """One HLC reading; compares by (millis, counter, node) and ``str()`` gives the sortable text.

    Examples:
        >>> from pydsqlite import Timestamp
        >>> early, late = Timestamp(1_000, 5, "a"), Timestamp(1_001, 0, "a")
        >>> early < late and str(early) < str(late)
        True
        >>> str(early)
        '000000000001000:000000005:00000000000000000000000000000000000a'
        >>> Timestamp.parse(str(late)) == late
        True
    """

    millis: int
    counter: int
    node: str

    def __post_init__(self) -> None:
        if not 0 <= self.millis <= MAX_MILLIS:
            raise ClockError(f"timestamp milliseconds {self.millis} out of range")
        if not 0 <= self.counter <= MAX_COUNTER:
            raise ClockError(f"timestamp counter {self.counter} out of range")
        object.__setattr__(self, "node", normalize_node_id(self.node))

    def __str__(self) -> str:
        return f"{self.millis:0{MILLIS_DIGITS}d}:{self.counter:0{COUNTER_DIGITS}d}:{self.node}"

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """The timestamp written as ``text``; anything but the exact fixed-width form is refused."""
        match = _TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ClockError(f"malformed HLC timestamp {text!r}: expected 15 digits:9 digits:36-character node id")
        return cls(int(match.group(1)), int(match.group(2)), match.group(3))


def check_text(text: object) -> None:
    """Refuse anything but the exact fixed-width timestamp text (cheaper than ``Timestamp.parse``), and
    a counter that leaves the receiving clock no room (``RECEIVED_COUNTER_LIMIT``)."""
    match = _TEXT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ClockError(f"malformed HLC timestamp {text!r}: expected 15 digits:9 digits:36-character node id")
    if int(match.group(2)) > RECEIVED_COUNTER_LIMIT:
        raise ClockError(
            f"HLC timestamp {text!r} has counter {int(match.group(2))}, more than {RECEIVED_COUNTER_LIMIT}: it would leave a clock "
            "receiving it too little room to count its own events within that millisecond (once it overflowed, every "
            "local write would fail until the wall clock passed it)"
        )


RECEIVED_COUNTER_LIMIT = MAX_COUNTER - 100_000_000
"""The largest counter a received timestamp may carry: no real clock counts that many events in one
millisecond, and a larger one would leave the receiving clock under 100 million before it overflows."""


def normalize_node_id(node: str) -> str:
    """Node ids are 1–36 characters of letters, digits, ``-`` and ``_``, stored left-padded to 36."""
    if not isinstance(node, str) or not _NODE.fullmatch(node):
        raise ClockError(f"invalid node id {node!r}: use 1-36 letters, digits, '-' or '_'")
    return node.rjust(NODE_WIDTH, "0")


def new_node_id() -> str:
    return str(uuid.uuid4())


def system_millis() -> int:
    return time.time_ns() // 1_000_000


def checked_clock_arguments(wall_clock: object, max_drift_ms: object) -> None:
    """Refuse clock arguments that would only fail later, at a merge: ``UsageError`` naming the argument."""
    if wall_clock is not None and not callable(wall_clock):
        raise UsageError(f"wall_clock must be a function returning milliseconds since the epoch (or None), not {wall_clock!r}")
    if isinstance(max_drift_ms, bool) or not isinstance(max_drift_ms, int) or max_drift_ms < 0:
        raise UsageError(f"max_drift_ms must be a whole number of milliseconds, 0 or more, not {max_drift_ms!r}")


def wall_millis(wall_clock: Callable[[], object]) -> int:
    """A wall-clock reading as whole milliseconds: an int, or a finite float (its fraction dropped);
    anything else is refused naming the value, as is a reading outside the timestamp range."""
    reading = wall_clock()
    if type(reading) is int:
        millis = reading
    elif isinstance(reading, float) and math.isfinite(reading):
        millis = math.floor(reading)
    else:
        raise UsageError(f"wall_clock returned {reading!r} ({type(reading).__name__}): it must return milliseconds since the epoch as an int")
    if not 0 <= millis <= MAX_MILLIS:
        raise ClockError(f"wall_clock returned {reading!r}: milliseconds since the epoch must be between 0 and {MAX_MILLIS}")
    return millis


class HLC:
    """A hybrid logical clock for one node.

    ``now()`` stamps a local event; ``receive(remote)`` merges a remote timestamp (a
    ``Timestamp`` or its text) and returns the new local reading. ``wall_clock`` returns
    milliseconds (injectable for tests; a float reading loses its fraction). A remote timestamp
    more than ``max_drift_ms`` ahead of the wall clock is refused and leaves the clock unchanged.

    Examples:
        >>> from pydsqlite import HLC, Timestamp
        >>> clock = HLC("node-a", wall_clock=lambda: 5_000)
        >>> first, second = clock.now(), clock.now()  # the same millisecond: the counter breaks the tie
        >>> (first.millis, first.counter), (second.millis, second.counter)
        ((5000, 0), (5000, 1))
        >>> merged = clock.receive(Timestamp(5_000, 7, "node-b"))
        >>> (merged.millis, merged.counter)  # after everything this node has seen
        (5000, 8)
    """

    def __init__(
        self,
        node_id: str | None = None,
        wall_clock: Callable[[], int] | None = None,
        *,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
    ) -> None:
        checked_clock_arguments(wall_clock, max_drift_ms)
        self.node_id = normalize_node_id(node_id or new_node_id())
        if self.node_id == SETTLED_NODE:
            raise ClockError(f"node id {node_id!r} is reserved: settlements of foreign keys are stamped with it")
        self.wall_clock = wall_clock or system_millis
        self.max_drift_ms = max_drift_ms
        self._millis = 0
        self._counter = 0
        self._lock = threading.Lock()

    @property
    def last(self) -> Timestamp:
        """The latest reading this clock gave or received."""
        return Timestamp(self._millis, self._counter, self.node_id)

    def restore(self, last: Timestamp | str) -> None:
        """Resume after a restart from this node's own last reading (trusted: no drift check)."""
        stamp = Timestamp.parse(last) if isinstance(last, str) else last
        with self._lock:
            if (stamp.millis, stamp.counter) > (self._millis, self._counter):
                self._millis, self._counter = stamp.millis, stamp.counter

    def now(self) -> Timestamp:
        """Send/local event: ``l = max(l, pt)``; the counter resets when ``l`` moved, else increments."""
        with self._lock:
            physical = wall_millis(self.wall_clock)
            if physical > self._millis:
                millis, counter = physical, 0
            else:
                millis, counter = self._millis, self._next_counter(self._counter)
            return self._set(millis, counter)

    def receive(self, remote: Timestamp | str) -> Timestamp:
        """Receive event: ``l = max(l, l_m, pt)`` with the four counter cases of the paper."""
        stamp = Timestamp.parse(remote) if isinstance(remote, str) else remote
        with self._lock:
            physical = wall_millis(self.wall_clock)
            if stamp.millis - physical > self.max_drift_ms:
                raise ClockError(
                    f"remote timestamp {stamp} is {stamp.millis - physical} ms ahead of the local clock "
                    f"(more than max_drift_ms={self.max_drift_ms}); refused"
                )
            millis = max(self._millis, stamp.millis, physical)
            if millis == self._millis and millis == stamp.millis:
                counter = self._next_counter(max(self._counter, stamp.counter))
            elif millis == self._millis:
                counter = self._next_counter(self._counter)
            elif millis == stamp.millis:
                counter = self._next_counter(stamp.counter)
            else:
                counter = 0
            return self._set(millis, counter)

    def _next_counter(self, counter: int) -> int:
        if counter >= MAX_COUNTER:
            raise ClockError("HLC counter overflow: too many events within one millisecond; refusing to wrap")
        return counter + 1

    def _set(self, millis: int, counter: int) -> Timestamp:
        stamp = Timestamp(millis, counter, self.node_id)
        self._millis, self._counter = millis, counter
        return stamp
