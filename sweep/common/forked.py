"""Independent jobs side by side in forked processes, on the cores a CPU run leaves idle.

A sweep's trainings are single-threaded by default (``threads: 1``: small models gain nothing
from a second thread), so on a machine of several cores the second one idles. ``Forked`` runs
jobs in child processes forked from this one: a child shares the parent's memory (the encoded
corpus) until it writes to it, and starts at once. Results come back in the order the jobs were
submitted, whatever order they end in, so a caller that decides from them decides as it would
alone. With one process there is no child: ``submit`` runs the job on the spot, the same code.

Forking is for CPU work only: a process that has started CUDA cannot fork a usable child.

Stopping: a child ignores SIGINT and dies on SIGTERM (no handler of the parent's); the parent,
stopped (SIGTERM, Ctrl-C: ``sweep.common.stop``) or failing, terminates its children before the
error goes on, and a child whose parent dies outright (SIGKILL) is killed by the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or taskset limits
    it), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def processes_for(setting: Any, device) -> int:
    """The ``processes`` setting as a number for a run on ``device``: ``auto`` takes the cores
    this process may use over its torch threads; 1 on a GPU, or where CUDA has started (a
    forked child of such a process cannot use it)."""
    import torch  # already loaded by any caller with a device

    if device.type != "cpu" or torch.cuda.is_initialized():
        return 1
    if setting == "auto":
        return max(1, usable_cores() // max(torch.get_num_threads(), 1))
    return max(int(setting), 1)


def die_with_parent(signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``signum`` to this process when its parent dies, even by SIGKILL,
    which no handler of the parent can pass on (Linux's PR_SET_PDEATHSIG). False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signum), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError) as error:  # no libc to be found
        log.debug("no parent-death signal: %s", error)
        return False


class _Done:
    """A job run on the spot (one process): its result, or its error raised again."""

    def __init__(self, fn: Callable[..., Any], args: tuple):
        try:
            self.result, self.error = fn(*args), None
        except Exception as error:  # as a child's: raised where the result is asked for
            self.result, self.error = None, error

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def _child_setup(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's terminate: at once
    die_with_parent()
    import torch  # already loaded by the parent: the child's own thread count

    torch.set_num_threads(threads)


class Forked:
    """At most ``processes`` jobs at once in forked children (``threads`` torch threads each);
    a context manager: the children are gone when it exits, at once on an error or a stop."""

    def __init__(self, processes: int, threads: int = 1):
        self.processes, self.threads = max(int(processes), 1), max(int(threads), 1)
        self.pool = None

    def __enter__(self) -> Forked:
        if self.processes > 1:
            context = multiprocessing.get_context("fork")
            self.pool = context.Pool(self.processes, _child_setup, (self.threads,))
        return self

    def submit(self, fn: Callable[..., Any], *args: Any):
        """Run ``fn(*args)`` (a module-level function: the child finds it by name; what it
        needs from this process it reads from memory the fork copied); an object whose
        ``get()`` waits for its result or raises its error."""
        if self.pool is None:
            return _Done(fn, args)
        return self.pool.apply_async(fn, args)

    def __exit__(self, kind, error, trace) -> None:
        if self.pool is None:
            return
        if error is None:
            self.pool.close()
        else:  # a stop or a failure: the other jobs' results are not wanted
            self.pool.terminate()
        with contextlib.suppress(Exception):
            self.pool.join()
        self.pool = None
