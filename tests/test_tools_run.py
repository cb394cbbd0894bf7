"""The run tool: off unless allowed, no shell, a timeout that kills the whole process group, an output cap."""

from __future__ import annotations

import sys
import time

import pytest

from l2m_core.errors import L2MError
from tools.run import RunPolicy, run_command

PY = sys.executable
ALLOW = RunPolicy(allow=True)


def test_off_unless_allowed(tmp_path):
    with pytest.raises(L2MError, match="running commands is off .*--allow-run"):
        run_command([PY, "-c", f"open({str(tmp_path / 'ran')!r}, 'w')"], tmp_path)
    assert not (tmp_path / "ran").exists()


def test_allowlist_matches_command_prefixes(tmp_path):
    policy = RunPolicy(allowlist=(f"{PY} -c", "git status"))
    assert run_command([PY, "-c", "print('hi')"], tmp_path, policy=policy).output == "hi\n"
    with pytest.raises(L2MError, match="not in the run allowlist"):
        run_command([PY, "-m", "pip"], tmp_path, policy=policy)
    with pytest.raises(L2MError, match="not in the run allowlist"):
        run_command(["git", "push"], tmp_path, policy=policy)


def test_shell_metacharacters_are_plain_arguments(tmp_path):
    tricky = ["a; touch pwned", "$(touch pwned2)", "`touch pwned3`", "x | tee pwned4", "> pwned5", "&& echo hi"]
    result = run_command([PY, "-c", "import sys; print(sys.argv[1:])", *tricky], tmp_path, policy=ALLOW)
    assert result.ok
    assert result.output.strip() == repr(tricky)
    assert list(tmp_path.iterdir()) == []


def test_exit_status_and_combined_output(tmp_path):
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    result = run_command([PY, "-c", code], tmp_path, policy=ALLOW)
    assert (result.returncode, result.ok, result.timed_out) == (3, False, False)
    assert "out" in result.output and "err" in result.output


def test_timeout_kills_the_process_group(tmp_path):
    marker = tmp_path / "grandchild-survived"
    grandchild = f"import time; time.sleep(1.5); open({str(marker)!r}, 'w')"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(30)"
    started = time.monotonic()
    result = run_command([PY, "-c", parent], tmp_path, timeout=0.5, policy=ALLOW)
    assert result.timed_out and result.returncode is None and not result.ok
    assert time.monotonic() - started < 10
    time.sleep(2.0)
    assert not marker.exists()


def test_output_cap_keeps_head_and_tail(tmp_path):
    code = "print('FIRST'); print('x' * 100_000); print('LAST')"
    result = run_command([PY, "-c", code], tmp_path, output_cap=1000, policy=ALLOW)
    assert result.truncated
    assert result.output.startswith("FIRST")
    assert result.output.rstrip().endswith("LAST")
    assert "bytes of output omitted" in result.output
    assert len(result.output) < 1100


@pytest.mark.parametrize("argv, message", [([], "empty command"), (["no-such-program-l2m"], "cannot run")])
def test_bad_commands(tmp_path, argv, message):
    with pytest.raises(L2MError, match=message):
        run_command(argv, tmp_path, policy=ALLOW)
