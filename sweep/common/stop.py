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
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """The run was told to stop: by a signal (``signum``), or by the run itself (``signum``
    None). A BaseException, as KeyboardInterrupt is: the code that records a trial's own failure
    (``except Exception``) lets it through to the trial loop."""

    def __init__(self, reason: str, signum: int | None = None):
        super().__init__(reason)
        self.reason, self.signum = reason, signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (SIGTERM: 143, SIGINT: 130); 0 without a signal."""
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
