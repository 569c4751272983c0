"""A log's chain verified in a second process, on the very bytes this one replays.

:class:`BackgroundVerify` starts the worker (:mod:`._verify_worker`, a new
Python that imports only the chain's module) and :meth:`~BackgroundVerify.feed`
passes it each chunk of the log as this process reads it, through a pipe: the
worker verifies exactly the bytes the replayer decodes (a file rewritten
between two reads cannot give the two processes two logs). Its verdict
(:meth:`~BackgroundVerify.result`) is what :func:`verify_reader` returns, or
the same exception with the same message. A worker that cannot start, dies,
is killed or replies anything but a verdict gives none (``result()`` is None):
the caller then verifies in its own process, so no replay is ever ok without a
verification. :func:`background_pays` says when a second process is worth its
start (some 150 ms, on another CPU).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs

from buddy.engine.core._chain import Anchor, ChainReport
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError

__all__ = ["MIN_BACKGROUND_BYTES", "BackgroundVerify", "background_pays"]

#: The smallest log worth verifying in a second process. The worker's verdict comes some
#: 150 ms (its start: Python and the chain's imports) after it is started, and verifying
#: costs it about what replaying costs this process per event (2-3 us): beside a replay,
#: the second process pays from some 50-100k events (30-60 MB).
MIN_BACKGROUND_BYTES = 32 << 20

_WORKER = Path(__file__).with_name("_verify_worker.py")
#: A worker that takes no bytes, or gives no verdict, for this long is gone: replay goes
#: on in one process (a worker verifies a chunk in milliseconds).
STALL_SECONDS = 10.0
#: Linux: F_SETPIPE_SZ. A pipe of a few chunks lets the replayer run ahead of the worker.
_SETPIPE_SZ, _PIPE_BYTES = getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20


def background_pays(size: int, *, parallel: bool | None = None,
                    min_bytes: int = MIN_BACKGROUND_BYTES) -> bool:
    """Whether to verify a log of ``size`` bytes in a second process while it is replayed.

    ``parallel``: True always (given a file), False never, None when the machine has
    more than one CPU, the log at least ``min_bytes`` and :data:`sys.executable` is
    a Python (not the binary of an application that embeds one).

    >>> background_pays(100 << 20, parallel=False), background_pays(1 << 20, parallel=True)
    (False, True)
    """
    if parallel is not None:
        return parallel
    return (os.cpu_count() or 1) > 1 and size >= min_bytes and _a_python(sys.executable)


def _a_python(executable: str | None) -> bool:
    """Whether ``executable`` is named as a Python interpreter is (``python``,
    ``python3.11``, ``pypy3``...). An application that embeds Python (a server, a
    plugin host) may name its own binary in :data:`sys.executable`: replay never
    starts that of its own accord."""
    if not executable:
        return False
    return re.fullmatch(r"(python|pypy)[0-9.]*(\.exe)?", Path(executable).name) is not None


class BackgroundVerify:
    """:func:`verify_reader` of the bytes :meth:`feed` is given, in a worker process.

    The worker starts when this is made; :meth:`result` ends its input and waits
    for its verdict, :meth:`cancel` (or leaving the ``with`` block) kills it.
    The key goes to the worker on its stdin, never on its command line or in
    its environment (both show in ``/proc``). ``source`` names the log in the
    verdict's messages.
    """

    def __init__(self, source: str, *, key: bytes | None, anchor: Anchor | None) -> None:
        job = json.dumps({"source": source, "key": None if key is None else key.hex(),
                          "anchor": None if anchor is None else attrs.asdict(anchor)})
        self._proc: subprocess.Popen[bytes] | None
        self._gone = False  # the worker stopped taking bytes: it gives no verdict
        try:
            if not sys.executable:  # None or "": an embedded Python names no interpreter
                raise FileNotFoundError(sys.executable)
            self._proc = subprocess.Popen(
                [sys.executable, "-P", str(_WORKER)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        except OSError:
            self._proc, self._gone = None, True
            return
        assert self._proc.stdin is not None
        self._in = self._proc.stdin.fileno()
        os.set_blocking(self._in, False)  # a worker that takes nothing cannot hold us
        with contextlib.suppress(OSError):  # a bigger pipe where the system allows it
            fcntl.fcntl(self._in, _SETPIPE_SZ, _PIPE_BYTES)
        self.feed(job.encode() + b"\n")

    def feed(self, chunk: bytes) -> bool:
        """Pass the worker the log's next bytes; False once it is gone (no verdict): it
        died, or took nothing for :data:`STALL_SECONDS` (stopped, or no verifier)."""
        if self._gone:
            return False
        view = memoryview(chunk)
        try:
            while view:
                try:
                    view = view[os.write(self._in, view):]
                except BlockingIOError:  # the pipe is full: wait for the worker, not for ever
                    if not select.select([], [self._in], [], STALL_SECONDS)[1]:
                        raise TimeoutError from None
        except TimeoutError:  # stuck: it gives no verdict
            self._gone = True
            self.cancel()
        except OSError:  # BrokenPipeError: it stopped reading (its error may be waiting)
            self._gone = True
        return not self._gone

    def result(self) -> tuple[ChainReport, str | None] | None:
        """End the worker's input and wait for its verdict: the report and torn tail, as
        :func:`verify_reader` gives; None when it gave none (verify in this process),
        within :data:`STALL_SECONDS` of the end of its input.

        Raises what :func:`verify_reader` would raise, with the same message: a
        worker's error is raised as its class with its fields.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        gone = self._gone  # then it read part of the log: only an error is a verdict
        try:
            assert proc.stdin is not None and proc.stdout is not None
            with contextlib.suppress(OSError):
                proc.stdin.close()
            # Its verdict is one short line: the pipe holds it while the worker exits.
            if proc.wait(timeout=STALL_SECONDS) != 0:
                return None
            reply = json.loads(proc.stdout.read())
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None
        finally:
            _stop(proc)
        if gone and not (isinstance(reply, dict) and "error" in reply):
            return None
        return _verdict(reply)

    def cancel(self) -> None:
        """Kill the worker (when its verdict is not wanted any more)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc)

    def __enter__(self) -> BackgroundVerify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


_REPORT = {"count": int, "last_seq": int, "last_hash": str, "chain": str}


def _verdict(reply: Any) -> tuple[ChainReport, str | None] | None:
    """The verdict in a worker's reply: the report and torn tail, or None when the reply
    is not one; an error it reports is raised."""
    if not isinstance(reply, dict):
        return None
    if reply.keys() == {"report", "torn"}:
        report, torn = reply["report"], reply["torn"]
        if (isinstance(report, dict) and report.keys() == _REPORT.keys()
                and all(type(report[k]) is t for k, t in _REPORT.items())
                and (torn is None or isinstance(torn, str))):
            return ChainReport(**report), torn
        return None
    error = reply.get("error")
    if error == "AuditChainBroken" and reply.keys() == {"error", "where", "seq", "reason"}:
        where, seq, reason = reply["where"], reply["seq"], reply["reason"]
        if isinstance(where, str) and isinstance(reason, str) and (
                seq is None or type(seq) is int):
            raise AuditChainBroken(where, seq, reason)
    elif error == "AuditFormatError" and reply.keys() == {"error", "where", "reason"}:
        where, reason = reply["where"], reply["reason"]
        if isinstance(where, str) and isinstance(reason, str):
            raise AuditFormatError(where, reason)
    elif error == "AuditError" and reply.keys() == {"error", "message"}:
        if isinstance(reply["message"], str):
            raise AuditError(reply["message"])
    return None
