"""A trained reader on a tiny model: samples from a store split by document, training on the real read path
lowers the loss, the adapter round-trips, `--reader none` is the plain read path, another model's reader is
refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from agent import Agent
from l2m_core.loading import load_model
from l2m_core.reader import Reader, load_reader
from l2m_core.settings import MemorySettings
from l2m_core.tiny import save_tiny_model
from l2m_core.training.reader import ReaderConfig, answer_ids, mean_loss, sample_losses, train_reader
from l2m_core.training.reader_data import corpus_samples, oracle_targets, passkey_reader_samples, split_by_document

# the tiny tokenizer is byte-level: 128-token blocks hold a sentence or a definition's first lines
SETTINGS = dict(block_size=128, chunk_size=256, sink=16, local=128, max_read_blocks=4, lexical_top_k=2,
                neighbours=1, hot_budget_mb=4, heading_blocks=True)

FILES = {
    "ship.py": '''\
        def parcel_cost(weight, distance):
            """Price of one parcel sent by road."""
            return weight * 2 + distance * 3


        def insure(value):
            """Insurance premium for a declared value."""
            return value / 100
        ''',
    "store.py": '''\
        class Shelf:
            """A shelf holding numbered boxes in a warehouse."""

            def count(self):
                """Number of boxes currently on the shelf."""
                return len(self.boxes)
        ''',
    "rules.txt": '''\
        Article 1
        Subject matter

        The owners shall keep a register of every lamp that has been repaired.

        Article 2
        Definitions

        For the purposes of this Regulation, a lamp means any device that gives light.

        Article 3
        Entry into force

        This Regulation shall enter into force on the twentieth day following its publication.
        ''',
    "notes.txt": '''\
        The warehouse opens at 7 in the morning and closes at 19 every weekday.

        Deliveries arrive by lorry from the northern depot twice a week.
        ''',
}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("reader-corpus")
    for name, text in FILES.items():
        (root / name).write_text(textwrap.dedent(text))
    agent = Agent.open(root, root / "store", tiny, settings=MemorySettings(**SETTINGS))
    agent.ingest()
    yield agent
    agent.close()


def test_samples_have_every_kind_answer_from_the_text_and_split_by_document(corpus):
    samples = corpus_samples(corpus.memory, seed=3)
    assert {s.kind for s in samples} == {"name", "file", "article", "cloze"}
    for s in samples:
        stored = corpus.memory.block_text(s.evidence)
        assert s.answer == s.source if s.kind == "file" else s.answer in "".join(
            corpus.memory.block_text(b) for b in corpus.memory.blocks_for(s.source)), s
        assert corpus.memory.meta[s.evidence].source == s.source and stored
    assert samples == corpus_samples(corpus.memory, seed=3)
    split = split_by_document(samples, held_out=0.5, seed=1)
    train_sources, held_sources = {s.source for s in split.train}, {s.source for s in split.held_out}
    assert train_sources and held_sources and not train_sources & held_sources
    assert held_sources == set(split.held_out_sources)
    assert len(split.train) + len(split.held_out) == len(samples)


def test_the_read_path_passes_gradients_to_the_reader_only(corpus):
    memory = corpus.memory
    memory.reader = Reader.fresh(memory.model, rank=4)
    try:
        sample_losses(memory, corpus_samples(memory)[:1]).sum().backward()
        ups = [p.grad for name, p in memory.reader.lora.named_parameters() if name.startswith("up.")]
        assert all(g is not None for g in ups) and sum(g.abs().sum() for g in ups) > 0
        assert all(p.grad is None for p in memory.model.parameters())
    finally:
        memory.reader = None


def test_a_batch_gives_each_sample_the_loss_and_gradients_it_gets_alone(corpus):
    """Rows of different lengths and read sets share one forward pass: padding and the other rows change
    neither a sample's loss nor the reader's gradients."""
    memory = corpus.memory
    samples = corpus_samples(memory)
    picked = sorted({len(s.question) + len(s.answer): s for s in samples}.items())
    batch = [picked[0][1], picked[len(picked) // 2][1], picked[-1][1]]
    assert len({memory.read_set(s.question)[0] for s in batch}) > 1  # not all reading the same blocks
    memory.reader = Reader.fresh(memory.model, rank=4)
    try:
        params = list(memory.reader.lora.parameters())
        alone = torch.cat([sample_losses(memory, [s]) for s in batch])
        alone.mean().backward()
        grads_alone = [p.grad.clone() for p in params]
        memory.reader.lora.zero_grad(set_to_none=True)
        together = sample_losses(memory, batch)
        together.mean().backward()
        assert torch.allclose(alone, together, atol=1e-5)
        assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(grads_alone, params, strict=True))
        assert sum(g.abs().sum() for g in grads_alone) > 0
        with torch.no_grad():  # each row's first logit is the one `ask` decodes its first token from
            rows = memory.answer_logits_batch([(s.question, answer_ids(memory, s.answer), []) for s in batch])
            for sample, row in zip(batch, rows, strict=True):
                tail, span = memory._tail(sample.question, None)
                _, first = memory._prefill(tail, span, memory.read_set(sample.question), [])
                assert row.shape[0] == len(answer_ids(memory, sample.answer))
                assert torch.allclose(row[0], first, atol=1e-4)
    finally:
        memory.reader = None


def test_oracle_targets_take_the_model_s_complete_reply_with_the_evidence_pasted_when_it_holds_the_span(
        corpus, monkeypatch):
    import l2m_core.training.reader_data as reader_data
    from l2m_core.generation import Generation

    memory = corpus.memory
    samples = corpus_samples(memory)[:3]
    replies = [f"It is {samples[0].answer}.", f"It is {samples[1].answer}", "Something else."]
    prompts = []

    def reply(lm, batch, stop, max_new_tokens, batch_size, progress):  # the second is cut off by the token limit
        prompts.extend(memory.tokenizer.decode(ids) for ids in batch)
        return [Generation(memory.tokenizer(text, add_special_tokens=False).input_ids, None if i == 1 else min(stop))
                for i, text in enumerate(replies)]

    monkeypatch.setattr(reader_data, "generate_batch", reply)
    out, replaced = oracle_targets(memory, samples)
    assert replaced == 1 and out[0].answer == replies[0] and out[1:] == samples[1:]
    for sample, prompt in zip(samples, prompts, strict=True):
        assert f"[{sample.source}]" in prompt and memory.block_text(sample.evidence) in prompt
        assert prompt.index(memory.block_text(sample.evidence)) < prompt.index(sample.question)


def test_passkey_samples_are_documents_of_their_own_in_a_fork(corpus, tmp_path):
    from conftest import DATA

    fork = corpus.memory.fork(tmp_path / "fork")
    try:
        samples = passkey_reader_samples(fork, 3, seed=0, data=DATA, doc_tokens=96)
        assert len({s.source for s in samples}) == 3
        for s in samples:
            assert s.kind == "passkey" and s.answer and s.answer in fork.block_text(s.evidence)
            assert fork.meta[s.evidence].source == s.source
        assert not any(m.source.startswith("reader-passkey/") for m in corpus.memory.meta.values())
    finally:
        fork.close()


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    split = split_by_document(corpus_samples(corpus.memory, seed=0), held_out=0.25, seed=0)
    reader, summary = train_reader(corpus.memory, split, ReaderConfig(steps=12, batch_size=2, lr=2e-2, rank=4,
                                                                      eval_every=6, seed=0))
    corpus.memory.reader = None
    directory = reader.save(tmp_path_factory.mktemp("reader"), curve=summary["curve"])
    return reader, summary, directory


def test_a_few_steps_lower_the_loss_on_the_training_samples(trained):
    _, summary, _ = trained
    curve = summary["curve"]
    assert [c["step"] for c in curve] == [0, 6, 12]
    assert curve[-1]["train_loss"] < curve[0]["train_loss"] - 0.1
    assert curve[-1]["held_out_loss"] is not None


def test_the_reader_kept_is_the_one_evaluated_with_the_lowest_held_out_loss(corpus, trained):
    reader, summary, _ = trained
    best = min(summary["curve"], key=lambda c: c["held_out_loss"])
    assert summary["kept_step"] == best["step"] and reader.config["held_out_loss"] == best["held_out_loss"]
    held_out = split_by_document(corpus_samples(corpus.memory, seed=0), held_out=0.25, seed=0).held_out
    assert len(held_out) <= ReaderConfig().eval_samples  # so the curve's held-out loss is over all of them
    corpus.memory.reader = reader
    try:
        assert mean_loss(corpus.memory, held_out, 4) == pytest.approx(best["held_out_loss"], abs=1e-3)
    finally:
        corpus.memory.reader = None


def test_a_reader_whose_held_out_loss_only_rises_is_kept_untrained(corpus):
    """A learning rate far too high wrecks the LoRA on its first step; what is kept is the reader of step 0,
    which reads as the plain model does."""
    split = split_by_document(corpus_samples(corpus.memory, seed=0), held_out=0.25, seed=0)
    reader, summary = train_reader(corpus.memory, split, ReaderConfig(steps=2, batch_size=2, lr=1.0, rank=4,
                                                                      eval_every=1, seed=0))
    corpus.memory.reader = None
    losses = [c["held_out_loss"] for c in summary["curve"]]
    assert min(losses[1:]) > losses[0] and summary["kept_step"] == 0
    question, answer = "Which file defines insure?", answer_ids(corpus.memory, "ship.py")
    with torch.no_grad():
        plain = corpus.memory.answer_logits(question, answer)
        corpus.memory.reader = reader
        try:
            kept = corpus.memory.answer_logits(question, answer)
        finally:
            corpus.memory.reader = None
    assert torch.allclose(plain, kept, atol=1e-5)


def test_the_saved_reader_gives_the_same_logits_and_the_plain_path_is_untouched(corpus, trained):
    reader, _, directory = trained
    memory = corpus.memory
    config = json.loads((directory / "reader.json").read_text())
    assert config["base"]["fingerprint"] == memory.lm.fingerprint and config["recipe"]["seed"] == 0
    question, answer = "Which file defines insure?", answer_ids(memory, "ship.py")
    with torch.no_grad():
        plain = memory.answer_logits(question, answer)
        memory.reader = reader
        trained_logits = memory.answer_logits(question, answer)
        memory.reader = load_reader(directory, memory.model)
        loaded = memory.answer_logits(question, answer)
        memory.reader = None
        after = memory.answer_logits(question, answer)
    assert torch.equal(trained_logits, loaded)
    assert not torch.allclose(plain, trained_logits)
    assert torch.equal(plain, after)  # the reader's hooks are gone once it is unset


def l2m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_reader_none_is_the_plain_path_and_another_models_reader_is_refused(corpus, trained, tmp_path):
    store = str(corpus.memory.files.path)
    ask = ["ask", "Which Article says that owners keep a register?", "--max-tokens", "8", "--store", store, "--json"]
    plain, none = l2m(*ask, cwd=tmp_path), l2m(*ask, "--reader", "none", cwd=tmp_path)
    assert plain.returncode == 0 and none.returncode == 0, plain.stderr + none.stderr
    assert json.loads(none.stdout) | {"timings": None} == json.loads(plain.stdout) | {"timings": None}
    with_reader = l2m(*ask, "--reader", str(trained[2]), cwd=tmp_path)
    assert with_reader.returncode == 0, with_reader.stderr
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "a", "question": ask[1]}) + "\n")
    batch = l2m("batch", "q.jsonl", "--out", "a.jsonl", "--max-tokens", "8", "--store", store, "--reader",
                str(trained[2]), cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    assert json.loads((tmp_path / "a.jsonl").read_text())["answer"] == json.loads(with_reader.stdout)["answer"]
    other = Reader.fresh(load_model(save_tiny_model(tmp_path / "other", seed=7), device="cpu").model, rank=4)
    refused = l2m(*ask, "--reader", str(other.save(tmp_path / "other-reader")), cwd=tmp_path)
    assert refused.returncode == 2 and "was trained on model" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_cli_trains_a_reader_for_a_store(corpus, tmp_path):
    out = tmp_path / "reader"
    done = l2m("train", "--task", "reader", "--store", str(corpus.memory.files.path), "--out", str(out), "--steps",
               "2", "--batch-size", "1", "--eval-every", "0", "--eval-examples", "2", "--lora-rank", "2",
               "--targets", "oracle", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["steps"] == 2 and summary["held_out_samples"] > 0
    config = json.loads((out / "reader.json").read_text())
    assert config["lora"]["rank"] == 2 and config["trained"]["steps"] == 2 and config["held_out_sources"]
    assert config["recipe"]["per_document"] == 8 and config["recipe"]["seed"] == 0
    assert config["recipe"]["targets"] == "oracle" and "targets" in done.stderr  # how many were replaced
    assert (out / "reader.safetensors").stat().st_size > 0
