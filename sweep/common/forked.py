"""Independent jobs side by side in forked processes, on the cores a CPU run leaves idle.

A sweep's trainings are single-threaded by default (``threads: 1``: small models gain nothing
from a second thread), so on a machine of several cores the second one idles. ``Forked`` runs
jobs in child processes forked from this one: a child shares the parent's memory (the encoded
corpus) until it writes to it, and starts at once. Results come back in the order the jobs were
submitted, whatever order they end in, so a caller that decides from them decides as it would
alone. With one process there is no child: ``submit`` runs the job on the spot, the same code.

Forking is for CPU work only: a process that has started CUDA cannot fork a usable child.

Stopping: a child ignores SIGINT and SIGTERM (a terminal's Ctrl-C and a scheduler's stop reach a
whole process group); the parent, stopped (``sweep.common.stop``) or failing, kills its
children before the error goes on, and a child whose parent dies outright (SIGKILL) is killed
by the kernel. Each job has a child of its own (no shared queue whose lock a killed child could
hold), and a child that dies without a result fails its job with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import multiprocessing
import multiprocessing.connection
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


# The errors a child's job may end in that come back as their own type (by name: the pipe
# carries data, not classes); any other comes back as a RuntimeError naming it.
_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e
    for e in (
        RuntimeError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        FloatingPointError,
        ArithmeticError,
        MemoryError,
        OSError,
    )  # fmt: skip
}


def _encode(outcome: tuple[bool, Any]) -> bytes:
    """A job's outcome as the bytes of ``torch.save``: plain values and tensors only, its data
    inline (nothing left for the parent to fetch from a child that is gone); an error as
    (its type's name, its message)."""
    import torch  # already loaded by the parent

    ok, value = outcome
    if not ok:
        value = (type(value).__name__, str(value))
    buffer = io.BytesIO()
    torch.save((ok, value), buffer)
    return buffer.getvalue()


def _decode(payload: bytes) -> tuple[bool, Any]:
    """A child's outcome read back as data (``torch.load(weights_only=True)``: plain values and
    tensors, no code named by the bytes runs); an error rebuilt from its name and message."""
    import torch

    ok, value = torch.load(io.BytesIO(payload), weights_only=True)
    if not ok:
        name, message = value
        error = _ERRORS.get(name)
        value = error(message) if error is not None else RuntimeError(f"{name}: {message}")
    return ok, value


def _child(fn: Callable[..., Any], args: tuple, threads: int, conn) -> None:
    """A child's whole life: its signals, its threads, the job, its outcome down the pipe
    (``_encode``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stop of the whole group: the parent too
    die_with_parent()
    import torch  # already loaded by the parent: the child's own thread count

    torch.set_num_threads(threads)
    try:
        outcome = (True, fn(*args))
    except Exception as error:
        outcome = (False, error)
    try:
        payload = _encode(outcome)
    except Exception as error:  # a result of types the pipe does not carry: a bug, named
        payload = _encode((False, RuntimeError(f"the job's result cannot be sent back: {error}")))
    conn.send_bytes(payload)
    conn.close()


class _Job:
    """A job for a child of its own: started when a slot is free, its result read once."""

    def __init__(self, owner: Forked, fn: Callable[..., Any], args: tuple):
        self.owner, self.fn, self.args = owner, fn, args
        self.process = self.conn = None
        self.outcome: tuple[bool, Any] | None = None

    def start(self) -> None:
        reader, writer = self.owner.context.Pipe(duplex=False)
        self.process = self.owner.context.Process(
            target=_child, args=(self.fn, self.args, self.owner.threads, writer), daemon=True
        )
        self.process.start()
        writer.close()  # the child's end: EOF here once it is gone
        self.conn = reader

    def poll(self) -> bool:
        """Whether the outcome is in: the result the child sent, or, where it ended without
        one, the error saying so."""
        if self.outcome is not None:
            return True
        if self.process is None:
            return False
        if self.conn.poll():
            try:
                self.outcome = _decode(self.conn.recv_bytes())
            except EOFError:  # the child is gone without a result
                self.process.join(timeout=10)
                self.outcome = (False, self.lost())
            self.finish()
            return True
        if not self.process.is_alive():
            if self.conn.poll():  # sent just before it ended
                return self.poll()
            self.outcome = (False, self.lost())
            self.finish()
            return True
        return False

    def lost(self) -> RuntimeError:
        code = self.process.exitcode
        how = f"killed by signal {-code}" if code and code < 0 else f"exit code {code}"
        hint = " (SIGKILL: the out-of-memory killer?)" if code == -signal.SIGKILL else ""
        return RuntimeError(f"a training side by side ended without a result: {how}{hint}; "
                            "processes=1 trains one at a time")  # fmt: skip

    def finish(self) -> None:
        self.conn.close()
        self.process.join(timeout=10)

    def get(self) -> Any:
        while not self.poll():
            self.owner.step(timeout=0.2)
        ok, value = self.outcome
        if not ok:
            raise value
        return value


class Forked:
    """At most ``processes`` jobs at once, each in a child forked for it (``threads`` torch
    threads); a context manager: no child outlives it, and on an error or a stop the children
    still running are killed at once. A child that dies without a result (the out-of-memory
    killer) fails its job with a clear error instead of leaving the run waiting."""

    def __init__(self, processes: int, threads: int = 1):
        self.processes, self.threads = max(int(processes), 1), max(int(threads), 1)
        self.context = multiprocessing.get_context("fork")
        self.jobs: list[_Job] = []

    def __enter__(self) -> Forked:
        return self

    def submit(self, fn: Callable[..., Any], *args: Any):
        """Run ``fn(*args)`` (what it needs from this process it reads from memory the fork
        copies when its child starts); an object whose ``get()`` waits for its result or
        raises its error."""
        if self.processes == 1:
            return _Done(fn, args)
        job = _Job(self, fn, args)
        self.jobs.append(job)
        self.step()
        return job

    def step(self, timeout: float = 0.0) -> None:
        """Read what the running children have sent, start waiting jobs in free slots, and
        wait up to ``timeout`` for the next child to send."""
        for job in self.jobs:
            job.poll()
        running = [j for j in self.jobs if j.process is not None and j.outcome is None]
        for job in [j for j in self.jobs if j.process is None][: self.processes - len(running)]:
            job.start()
            running.append(job)
        if timeout and running:
            multiprocessing.connection.wait([j.conn for j in running], timeout)

    def __exit__(self, kind, error, trace) -> None:
        for job in self.jobs:  # on success none is alive; on a stop or a failure: at once
            if job.process is not None and job.process.is_alive():
                job.process.kill()
            if job.process is not None:
                job.process.join(timeout=10)
                with contextlib.suppress(OSError):
                    job.conn.close()
        self.jobs = []
