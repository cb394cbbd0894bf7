"""The eval runner end to end on a tiny model, the results report, and the `l2m eval` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DATA
from evals_helpers import FakeMemory

from agent.evals.methods import MethodOptions
from agent.evals.report import write_report
from agent.evals.runner import EvalConfig, parse_length, parse_list, run
from cli.eval_cmd import eval_group
from l2m_core.errors import L2MError
from l2m_core.loading import load_model
from l2m_core.tiny import save_tiny_model

WINDOW = 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), max_positions=WINDOW)


@pytest.fixture(scope="module")
def passkey_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "passkey.json"
    config = EvalConfig(task="passkey", lengths=[512, 2048], samples=2, methods=["l2m", "truncate", "full", "rag"],
                        data=DATA, out=out, quiet=True,
                        options=MethodOptions(part_tokens=256, store_root=out.parent / "stores", memory_api=FakeMemory))
    return run(config, lm=load_model(model_dir, device="cpu"))


def test_every_sample_of_every_method_is_recorded(passkey_run):
    results, path = passkey_run
    assert path.is_file() and json.loads(path.read_text()) == results
    records = results["records"]
    assert len(records) == 2 * 4 * 2
    for r in records:
        assert {"length", "method", "index", "prediction", "score", "seconds", "depths", "prompt_tokens",
                "context_tokens", "status", "visible"} <= r.keys()
    by = {(r["method"], r["length"], r["index"]): r for r in records}
    assert by["full", 2048, 0]["status"] == "skipped" and by["full", 2048, 0]["score"] is None
    assert by["full", 512, 0]["status"] == "ok" and by["full", 512, 0]["prompt_tokens"] < WINDOW
    assert by["truncate", 2048, 0]["visible"] == 0.0 and by["truncate", 2048, 1]["visible"] == 1.0
    assert all(by["l2m", n, i]["score"] == 1.0 for n in (512, 2048) for i in (0, 1))  # the fake reads the key
    assert by["rag", 2048, 0]["depths"] == [pytest.approx(0.1, abs=0.03)]
    assert results["finished"] and results["command"].startswith("l2m eval passkey --lengths 512,2K")


def test_summary_per_method_and_length(passkey_run):
    results, _ = passkey_run
    rows = {(r["method"], r["length"]): r for r in results["summary"]}
    assert len(rows) == 8
    assert rows["full", 2048]["accuracy"] is None and rows["full", 2048]["skipped"] == 2
    assert rows["l2m", 2048]["accuracy"] == 1.0 and rows["l2m", 2048]["visible"] == 0.5
    assert rows["truncate", 2048]["visible"] == 0.5 and rows["truncate", 2048]["scored"] == 2
    assert all(r["errors"] == 0 for r in rows.values())
    assert any(s["method"] == "l2m" and s["seconds"] > 0 for s in results["setup"])


def test_plot_and_results_markdown(passkey_run, tmp_path):
    results, path = passkey_run
    png = path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png.unlink()
    (path.parent / "NOTES.md").write_text("Hand-written analysis.\n")
    markdown = write_report(path.parent, tmp_path / "RESULTS.md")
    text = markdown.read_text()
    assert "## Notes\n\nHand-written analysis." in text
    assert png.is_file()  # plots are regenerated from the JSON
    assert results["command"] in text and "| method | 512 | 2K |" in text
    assert "| full | " in text and "skipped" in text
    assert "| l2m | 100 (2) | 100 (2) |" in text
    assert "passkey, l2m >= 95% at 16K/32K/64K" in text and "not measured" in text


def test_report_of_a_folder_without_eval_results_is_a_user_error(tmp_path):
    with pytest.raises(L2MError, match="no result JSON files"):
        write_report(tmp_path, tmp_path / "RESULTS.md")
    (tmp_path / "other.json").write_text('{"benchmark": "something else"}')
    with pytest.raises(L2MError, match="no result JSON files"):
        write_report(tmp_path, tmp_path / "RESULTS.md")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(L2MError, match="cannot read results"):
        write_report(tmp_path, tmp_path / "RESULTS.md")


@pytest.mark.parametrize("text, tokens", [("0K", 0), ("4K", 4096), ("16k", 16384), ("1.5K", 1536), ("1M", 1048576),
                                          ("700", 700)])
def test_parse_length(text, tokens):
    assert parse_length(text) == tokens


def test_parse_list_takes_commas_or_spaces():
    assert parse_list("0K 4K,16K ,  32K") == ["0K", "4K", "16K", "32K"]


def test_cli_runs_a_task_and_prints_the_summary(model_dir, tmp_path):
    out = tmp_path / "niah.json"
    result = CliRunner().invoke(eval_group, [
        "niah", "--model", str(model_dir), "--lengths", "0K 700", "--samples", "1", "--variants", "single",
        "--methods", "truncate,rag", "--data", str(DATA), "--out", str(out), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["results"] == str(out) and len(data["summary"]) == 4
    assert json.loads(out.read_text())["command"].startswith("l2m eval niah --lengths 0K,700 --variants single")


@pytest.mark.parametrize("args, message", [
    (["passkey", "--lengths", "4 kilo"], "bad length"),
    (["passkey", "--methods", "oracle"], "unknown method"),
    (["passkey", "--depths", "0.5,2"], "bad --depths"),
    (["babilong", "--tasks", "qa9"], "unknown babilong variant"),
    (["passkey", "--data", "/no/such/folder"], "data folder not found"),
])
def test_cli_user_errors_are_one_line(model_dir, tmp_path, args, message):
    defaults = ["--model", str(model_dir), "--samples", "1", "--out", str(tmp_path)]
    for option, value in (("--lengths", "0K"), ("--data", str(DATA))):
        if option not in args:
            defaults += [option, value]
    result = CliRunner().invoke(eval_group, args + defaults)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_report_writes_markdown(passkey_run, tmp_path):
    _, path = passkey_run
    result = CliRunner().invoke(eval_group, ["report", "--results", str(path.parent),
                                             "--output", str(tmp_path / "R.md")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "R.md").read_text().startswith("# Long-context evaluation results")


def test_cli_writes_results_where_it_runs_unless_told(model_dir, tmp_path, monkeypatch):
    """No `--out`: the JSON and the plot go to the current directory (not into the source tree)."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(eval_group, [
        "passkey", "--model", str(model_dir), "--lengths", "0K", "--samples", "1", "--methods", "truncate",
        "--data", str(DATA), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.output)["results"])
    assert path.parent.resolve() == tmp_path.resolve() and path.name.startswith("passkey-")
    assert path.is_file() and path.with_suffix(".png").is_file()


def test_cli_takes_its_data_from_l2m_data_else_asks_for_it(model_dir, tmp_path, monkeypatch):
    args = ["passkey", "--model", str(model_dir), "--lengths", "0K", "--samples", "1", "--methods", "truncate",
            "--out", str(tmp_path), "--quiet"]
    monkeypatch.delenv("L2M_DATA", raising=False)
    missing = CliRunner().invoke(eval_group, args)
    assert missing.exit_code == 2 and "--data" in missing.output and "L2M_DATA" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    monkeypatch.setenv("L2M_DATA", str(DATA))
    assert CliRunner().invoke(eval_group, args).exit_code == 0


def test_cli_report_reads_and_writes_the_current_directory_by_default(passkey_run, tmp_path, monkeypatch):
    _, path = passkey_run
    shutil.copy(path, tmp_path / path.name)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(eval_group, ["report"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "RESULTS.md").read_text().startswith("# Long-context evaluation results")
    assert (tmp_path / path.with_suffix(".png").name).is_file()
