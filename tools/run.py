"""Running a command for the agent (tests, mostly): off unless allowed, never through a shell.

The argument list goes straight to `exec`, so `;`, `|`, `$(...)` or `>` in it are plain text. The
process runs in its own process group, which is killed on timeout and once it exits (no strays); its
output (stdout and stderr together) keeps its head and tail within the cap.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from l2m_core.errors import L2MError

DEFAULT_OUTPUT_CAP = 16_000


@dataclass(frozen=True)
class RunPolicy:
    """Whether commands may run: all of them (`allow`, the `--allow-run` flag), or those whose argument
    list starts with one of `allowlist` (each a command line such as "python -m pytest")."""

    allow: bool = False
    allowlist: tuple[str, ...] = ()

    def check(self, argv: Sequence[str]) -> None:
        """Raise `L2MError` unless `argv` may run."""
        if self.allow or any(_starts_with(argv, shlex.split(entry)) for entry in self.allowlist):
            return
        shown = shlex.join(argv)
        if self.allowlist:
            raise L2MError(f"{shown} is not in the run allowlist ({'; '.join(self.allowlist)})")
        raise L2MError(f"running commands is off ({shown}): pass --allow-run or configure a run allowlist")


RUN_OFF = RunPolicy()


@dataclass(frozen=True)
class RunResult:
    """What a command did: exit status (None when killed on timeout), capped output, seconds taken."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str
    timed_out: bool
    truncated: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run_command(
    argv: Sequence[str],
    cwd: str | Path,
    timeout: float = 60.0,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    policy: RunPolicy = RUN_OFF,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """Run `argv` (no shell) in `cwd` if `policy` allows it; kill its process group after `timeout` seconds.

    The output keeps at most `output_cap` bytes (its head and tail). `env` adds to (and overrides) the
    inherited environment. Raises `L2MError` when the policy refuses, the argument list is empty, or
    the program cannot be started.
    """
    argv = tuple(str(a) for a in argv)
    if not argv:
        raise L2MError("empty command")
    policy.check(argv)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    except OSError as exc:
        raise L2MError(f"cannot run {argv[0]}: {exc.strerror}") from None
    reader = _CappedReader(proc.stdout, output_cap)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc.pid)
        proc.wait()
        reader.join(timeout=5)  # a process that left the group may still hold the pipe
    output, truncated = reader.text()
    return RunResult(argv, None if timed_out else proc.returncode, output, timed_out, truncated,
                     time.monotonic() - started)


class _CappedReader(threading.Thread):
    """Drains a pipe, keeping the first and last `cap // 2` bytes (a test summary is at the end)."""

    def __init__(self, pipe, cap: int):
        super().__init__(daemon=True)
        self.pipe, self.cap = pipe, cap
        self.head, self.tail = bytearray(), bytearray()
        self.dropped = 0

    def run(self) -> None:
        half = self.cap // 2
        with self.pipe:
            for chunk in iter(lambda: self.pipe.read1(65536), b""):
                room = half - len(self.head)
                self.head += chunk[:room]
                self.tail += chunk[max(room, 0):]
                if len(self.tail) > 2 * (self.cap - half):
                    cut = len(self.tail) - (self.cap - half)
                    self.dropped += cut
                    del self.tail[:cut]

    def text(self) -> tuple[str, bool]:
        keep = self.cap - len(self.head)
        if len(self.tail) > keep:
            self.dropped += len(self.tail) - keep
            del self.tail[: len(self.tail) - keep]
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.dropped:
            return head + tail, False
        return f"{head}\n[... {self.dropped} bytes of output omitted ...]\n{tail}", True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _starts_with(argv: Sequence[str], prefix: Sequence[str]) -> bool:
    """Whether `argv` begins with `prefix`; a bare program name also matches the path PATH finds for it."""
    if not prefix or len(argv) < len(prefix) or list(argv[1:len(prefix)]) != list(prefix[1:]):
        return False
    return argv[0] == prefix[0] or (os.sep not in prefix[0] and argv[0] == shutil.which(prefix[0]))
