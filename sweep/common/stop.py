"""How a run stops before its end: a signal (SIGTERM, SIGINT) or the time budget.

A scheduler (``timeout``, SLURM, Kubernetes, systemd) stops a job with SIGTERM to its main
process, a terminal with SIGINT. Left to Python, SIGTERM ends the process on the spot (no
report, a trial left RUNNING, a parent's workers orphaned) and SIGINT raises KeyboardInterrupt.
``install`` makes both raise ``Stopped`` once, in the main thread: the trial loop fails the trials
it was running with the reason (``stopped: SIGTERM``), the runner writes its reports, and the
process exits with ``Stopped.exit_code`` (128 + the signal's number: 143, 130, as a shell reports
a process a signal ended). A signal that comes while the first stop is being handled is logged
and dropped. ``deferred()`` holds a stop back across a few storage writes that must not be cut
in two (asking a trial and stamping it with its worker).

``TimeBudget`` is ``search.timeout_s`` and ``search.timeout_grace_s``: the run stops asking for
trials at the deadline, and ``TimeBudget.enforced`` raises ``Stopped`` (no signal: exit code 0)
in whatever still trains once the grace has passed too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The parent of search.workers puts its start (time.time()) here for its workers: their time
# budget counts from the run's start, not their own.
RUN_STARTED = "SWEEP_RUN_STARTED"


class Stopped(BaseException):
    """The run was told to stop: by a signal (``signum``), or by the time budget's grace
    (``signum`` None). A BaseException, as KeyboardInterrupt is: the code that records a
    trial's own failure (``except Exception``) lets it through to the trial loop."""

    def __init__(self, reason: str, signum: int | None = None):
        super().__init__(reason)
        self.reason, self.signum = reason, signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (SIGTERM: 143, SIGINT: 130); 0 for the time budget."""
        return 128 + self.signum if self.signum else 0


def stop_of(error: BaseException) -> Stopped:
    """``error`` as a ``Stopped`` (a KeyboardInterrupt where no handler is installed: SIGINT)."""
    if isinstance(error, Stopped):
        return error
    return Stopped("stopped: SIGINT", int(signal.SIGINT))


class _Switch:
    """The process's one stop: raised once, or held back inside ``deferred()``."""

    def __init__(self) -> None:
        self.signalled: Stopped | None = None  # the first signal's stop: the process ends
        self.held = 0  # depth of deferred()
        self.pending: Stopped | None = None

    def trip(self, stop: Stopped) -> None:
        if self.signalled is not None:
            log.warning("%s while stopping already: the stop goes on", stop.reason)
            return
        if self.held:
            self.pending = self.pending or stop
            return
        if stop.signum is not None:
            self.signalled = stop
        raise stop


_SWITCH = _Switch()


def _on_signal(signum: int, frame) -> None:
    _SWITCH.trip(Stopped(f"stopped: {signal.Signals(signum).name}", signum))


def install() -> None:
    """SIGTERM and SIGINT raise ``Stopped`` from here on (main thread only). A signal this
    process was started with ignored (``nohup``, a background job's SIGINT) stays ignored."""
    for signum in SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, _on_signal)


def stopping() -> Stopped | None:
    """The signal's stop this process is handling, if any."""
    return _SWITCH.signalled


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A stop that arrives inside is raised at its end, not in the middle."""
    _SWITCH.held += 1
    try:
        yield
    finally:
        _SWITCH.held -= 1
        if not _SWITCH.held and _SWITCH.pending is not None:
            stop, _SWITCH.pending = _SWITCH.pending, None
            _SWITCH.trip(stop)


@dataclass
class TimeBudget:
    """``search.timeout_s`` seconds from ``started`` (``time.time()``; None: no budget) and
    ``search.timeout_grace_s``: how long trials that are training at the deadline may go on (None:
    to their end)."""

    timeout_s: float | None = None
    grace_s: float | None = None
    started: float = field(default_factory=time.time)

    @classmethod
    def of(cls, search_cfg, started: float | None = None) -> TimeBudget:
        """The budget of ``search_cfg``, counted from ``started``, else from the start of the
        run this process is a worker of (``SWEEP_RUN_STARTED``), else from now."""
        if started is None:
            started = float(os.environ.get(RUN_STARTED) or time.time())
        timeout, grace = search_cfg.get("timeout_s"), search_cfg.get("timeout_grace_s")
        return cls(None if timeout is None else float(timeout),
                   None if grace is None else float(grace), started)  # fmt: skip

    @property
    def deadline(self) -> float | None:
        return None if self.timeout_s is None else self.started + self.timeout_s

    def left(self) -> float:
        """Seconds until the deadline (inf without a budget; negative once it has passed)."""
        return math.inf if self.deadline is None else self.deadline - time.time()

    def ended(self) -> bool:
        return self.left() <= 0

    def reason(self) -> str:
        """Why a trial still training past the grace was stopped."""
        return (
            f"stopped: the time budget (search.timeout_s={self.timeout_s:g}) ended and its "
            f"grace (search.timeout_grace_s={self.grace_s:g}) passed"
        )

    @contextlib.contextmanager
    def enforced(self) -> Iterator[None]:
        """Inside, ``Stopped`` (no signal) is raised once the deadline and the grace have passed
        (SIGALRM: in the main thread of a POSIX system; elsewhere the grace is not enforced and
        running trials finish)."""
        armed = (
            self.deadline is not None
            and self.grace_s is not None
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        if not armed:
            yield
            return
        at = max(self.deadline + self.grace_s - time.time(), 1e-3)
        previous = signal.signal(signal.SIGALRM, lambda s, f: _SWITCH.trip(Stopped(self.reason())))
        signal.setitimer(signal.ITIMER_REAL, at)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
