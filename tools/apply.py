"""Applying staged edits on request, then optionally running the tests and reverting if they fail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tools.edits import EditSet
from tools.run import RUN_OFF, RunPolicy, RunResult, run_command


@dataclass(frozen=True)
class ApplyOutcome:
    """What `apply_and_test` did: the journal entry, the files written, the test run, whether it reverted."""

    entry: str
    files: list[str]
    test: RunResult | None
    reverted: bool

    @property
    def ok(self) -> bool:
        return self.test is None or self.test.ok


def apply_and_test(
    edits: EditSet,
    test: Sequence[str] | None = None,
    *,
    policy: RunPolicy = RUN_OFF,
    timeout: float = 600.0,
    revert_on_fail: bool = False,
    env: Mapping[str, str] | None = None,
) -> ApplyOutcome:
    """Apply `edits`; then run the `test` command (if any) in the repository root, and when it fails
    (non-zero exit or timeout) undo the whole change set if `revert_on_fail`.

    The policy is checked before anything is written, so a refused test command applies nothing.
    """
    if test is not None:
        policy.check(test)
    files = edits.staged_files()
    entry = edits.apply()
    if test is None:
        return ApplyOutcome(entry, files, None, False)
    result = run_command(test, edits.ws.root, timeout=timeout, policy=policy, env=env)
    reverted = not result.ok and revert_on_fail
    if reverted:
        edits.journal.undo(edits.ws)
    return ApplyOutcome(entry, files, result, reverted)
