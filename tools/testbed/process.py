"""Free ports and the lifecycle of one server subprocess (start, wait until ready, stop)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self


class TestbedError(RuntimeError):
    """A testbed server could not be started or misbehaved."""

    # pytest would otherwise try to collect this class because its name starts with "Test".
    __test__ = False


class TestbedUnavailable(TestbedError):
    """A tool the testbed needs is not installed; callers decide whether that skips or fails."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ManagedProcess:
    """A subprocess whose output goes to a log file, stopped only through its own handle."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self._popen.pid

    def running(self) -> bool:
        return self._popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(log unreadable)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, probe: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
        """Poll `probe` until it says yes; fail early, with the log tail, if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            code = self._popen.poll()
            if code is not None:
                raise TestbedError(f"{what} exited with code {code}; log tail:\n{self.log_tail()}")
            if probe():
                return
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"{what} not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def stop(self, grace: float = 5.0) -> None:
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        with contextlib.suppress(OSError):
            self._log.close()


class Service:
    """A server the testbed starts and stops; as a context manager it runs for the block."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
