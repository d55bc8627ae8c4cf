"""
The processes of a benchmark run: started in one place, waited for, and all ended.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Seconds a process may take to listen once started.
START_TIMEOUT = 20.0
# Seconds a process gets to end after SIGTERM, before SIGKILL.
STOP_TIMEOUT = 5.0


class StartFailed(Exception):
    """
    A target did not start, or started but did not answer as the origin does.

    @ivar reason: what went wrong, in one line for the report.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunFailed(Exception):
    """
    A run of wrk gave no measurement.

    @ivar reason: what went wrong, in one line for the report.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _die_with_parent() -> None:
    """
    Ask Linux to send SIGTERM to the calling (child) process when its parent dies.

    Runs in the child between fork and exec: if this script is killed without
    a chance to clean up, its children go with it rather than linger.
    """
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass


def capture(argv: Sequence[str], timeout: float = 10.0) -> str:
    """
    Run a short command to completion and return its output, stdout and stderr together.

    For version and build queries before a run; a command that fails to run
    gives its error message instead.
    """
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    return completed.stdout + completed.stderr


@dataclass
class Process:
    """
    A process started by a L{Supervisor}.

    @ivar name: its name in logs and messages.
    @ivar popen: the running process.
    @ivar log: the file its stdout and stderr go to.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """
        Its process id.
        """
        return self.popen.pid

    def output(self) -> str:
        """
        All it has written so far.
        """
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def last_line(self) -> str:
        """
        The last line it wrote, which is where a failing start says why.
        """
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        last = lines[-1] if lines else "(no output)"
        return last if len(last) <= 160 else last[:157] + "..."


@dataclass
class Supervisor:
    """
    Starts the processes of a run, each in its own session with its output in a
    log file under C{directory}, and ends them all.

    Used as a context manager, it ends every process still running when the
    block is left, whether by return, exception or Ctrl-C; and each child gets
    SIGTERM from the kernel if this script dies without leaving the block.

    @ivar directory: the run's temporary directory.
    """

    directory: Path
    _running: list[Process] = field(default_factory=list)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        """
        Start C{argv} in the background, in C{cwd} or else C{directory}.

        @param name: its name, also the name of its log file.
        @param env: variables set on top of this process's environment.
        @raise StartFailed: if it cannot be executed.
        """
        log = self.directory / f"{name}.log"
        environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        with log.open("wb") as output:
            try:
                popen = subprocess.Popen(
                    list(argv),
                    cwd=cwd or self.directory,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as error:
                raise StartFailed(f"cannot run {argv[0]}: {error}") from None
        process = Process(name, popen, log)
        self._running.append(process)
        return process

    def run(self, name: str, argv: Sequence[str], timeout: float) -> str:
        """
        Run C{argv} to completion and return its output.

        @raise RunFailed: if it does not end within C{timeout} seconds (it is
            killed) or ends with a non-zero status.
        """
        try:
            process = self.start(name, argv)
        except StartFailed as failed:
            raise RunFailed(failed.reason) from None
        try:
            status = process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RunFailed(f"{name} did not finish within {timeout:.0f} s") from None
        finally:
            self.stop(process)
        if status != 0:
            raise RunFailed(f"{name} exited with status {status}: {process.last_line()}")
        return process.output()

    def wait_until_listening(self, process: Process, port: int, timeout: float) -> None:
        """
        Wait until 127.0.0.1:C{port} accepts connections.

        @raise StartFailed: if C{process} exits first, or C{timeout} seconds pass.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = process.popen.poll()
            if status is not None:
                raise StartFailed(f"exited with status {status}: {process.last_line()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"not listening on port {port} after {timeout:.0f} s: {process.last_line()}"
                )
            time.sleep(0.05)

    def stop(self, process: Process) -> None:
        """
        End C{process} and everything in its session: SIGTERM, then SIGKILL
        after L{STOP_TIMEOUT} seconds.
        """
        if process in self._running:
            self._running.remove(process)
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; its session may still hold children (an
            # nginx worker) that SIGTERM is ending: finish them.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return

    def stop_all(self) -> None:
        """
        End every process still running, the last started first.
        """
        for process in reversed(list(self._running)):
            self.stop(process)


def free_ports(count: int) -> list[int]:
    """
    Find C{count} distinct free TCP ports on 127.0.0.1.

    They are found by binding port 0 and released at once, so another program
    could take one before it is used; starting the target then fails and says so.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()
