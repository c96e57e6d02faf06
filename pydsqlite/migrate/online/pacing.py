"""Pacing the steps of an online migration: how much each step takes so that it holds the write
lock for about ``STEP_BUDGET``, the pause after it, and the progress reports."""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..execute import ProgressCallback

logger = logging.getLogger(__name__)

STEP_BUDGET = 0.05
"""Seconds of write lock one step aims for, its commit included (chunks are resized after every
step). A writer that came in as the step began has slept 1+2+5+10+15+20 ms in its busy handler
by 53 ms and wakes next at 78 ms: a step ending by then lets every waiting writer in within
about 80 ms, with room for a step that takes longer than the last one predicted."""
STEP_LIMIT = 0.062
"""Seconds after which a step's statement is interrupted and the step rolled back, to be taken
again in half the size: the hard bound behind ``STEP_BUDGET`` (a commit takes another 10 to
15 ms), where the engine can interrupt a statement."""
MIN_PAUSE = 0.002
"""Shortest pause between two steps."""
FEWEST_UNITS = 16
"""The smallest step (rows or log entries)."""
BUSY_HANDLER_SLEEPS = (0.001, 0.002, 0.005, 0.010, 0.015, 0.020, 0.025, 0.025, 0.025, 0.050, 0.050, 0.100)
"""How long SQLite's busy handler sleeps between its tries (sqlite3_busy_timeout), then 100 ms each."""


class Pacer:
    """Sizes a kind of step (rows or log entries per transaction) to hold the write lock for about
    ``STEP_BUDGET``. One statement per step: each further statement in a transaction copies every
    page it changes to a statement journal first, and a chunk changes the same index pages as
    the last one, so several small statements cost twice the lock time of one."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.costs: deque[float] = deque(maxlen=4)
        """Seconds of lock per unit in the last few full steps: sized by the slowest, as the time a
        unit takes varies from step to step (the disk, the cache, the writers)."""

    def done(self, units: int, held: float) -> None:
        """After a step that took ``units`` holding the lock for ``held`` seconds."""
        if units >= self.size // 2 and held > 0:
            self.costs.append(held / units)
            self.size = max(FEWEST_UNITS, min(self.size * 2, round(STEP_BUDGET / max(self.costs))))

    def overran(self) -> None:
        """After a step interrupted at ``STEP_LIMIT``: its units take longer than that."""
        logger.debug("an online migration step of %d units ran past %.0f ms and was rolled back", self.size, STEP_LIMIT * 1000)
        self.costs.append(STEP_LIMIT / self.size)
        self.size = max(FEWEST_UNITS, self.size // 2)

    @property
    def time_limited(self) -> bool:
        """Whether the next step may be stopped at ``STEP_LIMIT``: not once it is as small as steps
        get (rows that each take that long would otherwise be retried for ever)."""
        return self.size > FEWEST_UNITS


@dataclass
class Step:
    """When one step's transaction began, and (once committed) how long it held the write lock."""

    started: float = field(default_factory=time.perf_counter)
    held: float = 0.0


class Overran(Exception):
    """A step ran into ``STEP_LIMIT`` and was rolled back."""


class Refused(Exception):
    """A chunk copied without a statement journal left rows out (the new table refused them): the
    step is rolled back and the chunk copied again in a way that names the refusal."""


def busy_handler_sleep(waited: float) -> float:
    """The sleep SQLite's busy handler is in after a writer has waited ``waited`` seconds: the
    longest a writer that came in during a step can still be asleep when it ends."""
    slept = 0.0
    for sleep in BUSY_HANDLER_SLEEPS:
        if waited < slept + sleep:
            return sleep
        slept += sleep
    return BUSY_HANDLER_SLEEPS[-1]


class Progress:
    """The caller's ``progress(table, done, total)``; a callback that takes a ``phase`` keyword
    also learns the phase (``"copy"``, ``"catch-up"``, ``"swap"``, ``"free"``)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.takes_phase = callback is not None and _accepts_phase(callback)

    def __call__(self, table: str, done: int, total: int, phase: str) -> None:
        if self.callback is None:
            return
        if self.takes_phase:
            self.callback(table, done, total, phase=phase)  # type: ignore[call-arg]
        else:
            self.callback(table, done, total)


def _accepts_phase(callback: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "phase" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
