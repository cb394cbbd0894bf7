"""The trainer: truncated backpropagation, exact resume, safetensors checkpoints, and `l2m train`."""

from __future__ import annotations

import json

import click
import pytest
import torch
from click.testing import CliRunner

from cli.common import L2MGroup
from cli.train_cmd import train
from l2m_core.errors import L2MError
from l2m_core.lm2 import attach_memory
from l2m_core.lm2.adapter import named_parameters
from l2m_core.tiny import byte_tokenizer, tiny_llama
from l2m_core.training.lm2_tasks import KeyValueRecall
from l2m_core.training.lm2_trainer import TrainConfig, Trainer, run_episode
from tests.lm2_helpers import make_reads_matter, one_thread, tiny_with_memory  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TOK = byte_tokenizer()


def _task(gap: int = 1) -> KeyValueRecall:
    return KeyValueRecall(TOK, segment_len=8, gap=gap, facts=2)


def _trainer(out_dir=None, resume=False, steps=4, **overrides) -> Trainer:
    config = TrainConfig(steps=steps, batch_size=4, eval_every=0, eval_examples=8, checkpoint_every=2, warmup=2,
                         end_to_end=True, **overrides)
    return Trainer(tiny_with_memory(seed=0), _task(), config, out_dir, resume=resume)


@pytest.mark.parametrize("tbptt, reaches_first_write", [(0, True), (1, False)])
def test_truncated_backprop_stops_gradients_at_the_window(tbptt, reaches_first_write):
    mm = tiny_with_memory(seed=0)
    make_reads_matter(mm)
    episode = _task(gap=1).episode(4, seed=0)  # 3 segments: facts, filler, question
    result = run_episode(mm, episode, tbptt=tbptt)
    result.task_loss.backward()
    first_write = mm.memory.block(0).initial.grad  # the bank segment 0 reads and then rewrites
    assert (first_write is not None and first_write.abs().sum() > 0) == reaches_first_write
    assert mm.memory.block(0).read_out.weight.grad.abs().sum() > 0  # the last segment's read still learns


def test_a_frozen_base_gets_no_gradient_and_does_not_change():
    mm = tiny_with_memory(seed=0)
    before = {k: v.clone() for k, v in mm.model.state_dict().items()}
    trainer = Trainer(mm, _task(), TrainConfig(steps=2, batch_size=4, eval_every=0, eval_examples=4))
    trainer.train()
    assert all(torch.equal(before[k], v) for k, v in mm.model.state_dict().items())
    assert not any(p.requires_grad for p in mm.model.parameters())
    assert not torch.equal(mm.memory.block(0).read_out.weight, torch.zeros_like(mm.memory.block(0).read_out.weight))


def test_resuming_continues_exactly_where_training_stopped(tmp_path):
    straight = _trainer(tmp_path / "a", steps=4)
    straight.train()
    interrupted = _trainer(tmp_path / "b", steps=4)
    for _ in range(2):
        interrupted.train_step()
    interrupted.save_checkpoint()
    resumed = _trainer(tmp_path / "b", resume=True, steps=4)
    assert resumed.step == 2
    resumed.train()
    a, b = named_parameters(straight.modules), named_parameters(resumed.modules)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [h["step"] for h in resumed.history] == [4]


def test_checkpoint_and_adapter_are_safetensors_and_json(tmp_path):
    trainer = _trainer(tmp_path, steps=2)
    trainer.train()
    assert {p.name for p in (tmp_path / "checkpoint").iterdir()} == {
        "trainable.safetensors", "optimizer.safetensors", "state.json"}
    assert not (tmp_path / "checkpoint.partial").exists()
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["task"] == "kv"
    assert (tmp_path / "base" / "config.json").is_file()  # end to end: the trained base is saved too
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    mm = attach_memory(base, tmp_path / "adapter")
    assert torch.equal(mm.memory.block(1).read_out.weight, trainer.model.memory.block(1).read_out.weight)


def test_resume_without_a_checkpoint_and_training_nothing_are_errors(tmp_path):
    with pytest.raises(L2MError, match="nothing to resume"):
        _trainer(tmp_path, resume=True)
    with pytest.raises(L2MError, match="nothing to train"):
        Trainer(tiny_with_memory(seed=0), _task(), TrainConfig(use_memory=False))


def test_time_budget_stops_early_and_still_saves(tmp_path):
    trainer = _trainer(tmp_path, steps=1000, time_budget=0.0)
    summary = trainer.train()
    assert summary["steps"] <= 1 and (tmp_path / "adapter" / "adapter.json").is_file()


def _cli() -> click.Group:
    group = L2MGroup("l2m")
    group.add_command(train)
    return group


def test_l2m_train_trains_saves_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "tiny", "--task", "kv", "--segment-len", "8", "--gap", "1", "--steps", "2",
            "--batch-size", "4", "--eval-examples", "8", "--slots", "4", "--end-to-end", "--out", str(out),
            "--baseline", "--json", "--device", "cpu"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and 0 <= summary["accuracy"] <= 1 and "accuracy_without_memory" in summary
    assert (out / "adapter" / "adapter.safetensors").is_file() and (out / "base" / "config.json").is_file()
    assert "eval" in result.stderr

    again = CliRunner().invoke(_cli(), [*args[:args.index("--steps") + 1], "3", *args[args.index("--steps") + 2:],
                                        "--resume"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["steps"] == 3


@pytest.mark.parametrize("args, message", [
    (["--task", "nope"], "unknown task"),
    (["--resume"], "nothing to resume"),
    (["--layers", "x"], "--layers"),
])
def test_l2m_train_reports_user_errors_on_one_line(tmp_path, args, message):
    result = CliRunner().invoke(_cli(), ["train", "--model", "tiny", "--task", "kv", "--out", str(tmp_path / "o"),
                                         "--steps", "1", "--device", "cpu", *args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_trained_memory_of_a_frozen_base_loads_by_adapter_path(tmp_path):
    model = tiny_llama(seed=0)
    trainer = Trainer(attach_memory(model, None, TOK, slots=4, attn_dim=32), _task(),
                      TrainConfig(steps=1, batch_size=4, eval_every=0, eval_examples=4), tmp_path)
    trainer.train()
    assert not (tmp_path / "base").exists()
    loaded = attach_memory(tiny_llama(seed=0), tmp_path / "adapter", TOK)
    assert loaded.answer("a1 b2 ", "a", segment_len=8, max_new_tokens=2) is not None


def test_lm2_benchmark_runs_resumes_and_writes_json_and_plot(tmp_path, tiny_model_dir):
    """The benchmark's plumbing on a tiny model: memory on chosen layers, a resumed second run that continues
    the step count and history, JSON and PNG written."""
    from bench.bench_lm2 import main

    common = ["--model", str(tiny_model_dir), "--task", "kv", "--segment-len", "12", "--batch-size", "2",
              "--eval-examples", "4", "--eval-every", "0", "--layers", "1", "--lr", "1e-3", "--warmup", "1",
              "--run-dir", str(tmp_path / "run"), "--threads", "1"]
    first = main([*common, "--max-steps", "2", "--out", str(tmp_path / "a.json")])
    assert first["memory"]["layers"] == [1] and first["train"]["steps"] == 2
    second = main([*common, "--max-steps", "4", "--resume", "--out", str(tmp_path / "b.json")])
    assert second["train"]["resumed_from_step"] == 2 and second["train"]["steps"] == 4
    assert [h["step"] for h in second["history"]] == [0, 2, 4]
    assert json.loads((tmp_path / "b.json").read_text())["history"] == second["history"]
    assert (tmp_path / "b.png").stat().st_size > 0
