"""The learned address head: baseline equivalence, learning on a toy task, persistence, engine and CLI use."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from l2m_core.address_head import CONFIG, WEIGHTS, AddressHead, load_address_head, question_keys
from l2m_core.addressing import rrf
from l2m_core.errors import L2MError
from l2m_core.loading import LoadedModel, load_model
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings
from l2m_core.tiny import tiny_llama
from l2m_core.training.address import (
    Example,
    HaystackBlocks,
    _batch,
    distractors,
    evaluate,
    head_rankings,
    positives,
    recall_at,
    train,
)

TEXT = "\n".join(f"Line {i}: the {['red', 'green', 'blue'][i % 3]} lamp number {i * 7} glows." for i in range(1, 40))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


def small(**changes) -> MemorySettings:
    base = dict(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, lexical_top_k=2, hot_budget_mb=4)
    return MemorySettings(**{**base, **changes})


def key_maxima(q: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Plain key-key maxima: per block, the sum over layers and heads of max over (token, repr) of q.k."""
    s = torch.einsum("shtd,snjhd->snhtj", q.float(), bank.float())
    return s.flatten(-2).amax(-1).sum(dim=(0, 2))


def test_untrained_head_is_plain_key_key_maxima(tiny, tmp_path):
    head = AddressHead(layers=[0, 1], kv_heads=2, head_dim=16, rank=4)
    q, bank = torch.randn(2, 2, 5, 16), torch.randn(2, 30, 4, 2, 16)
    assert torch.allclose(head.scores(q, bank) * math.sqrt(16), key_maxima(q, bank), atol=1e-4)

    mem = Memory.create(tmp_path / "s", tiny, small())
    mem.ingest_document(TEXT, "doc.txt")
    head = AddressHead.for_model(tiny.model)
    assert head.layers == [0, 1]
    ids, stack = mem.reprs.stacked()
    keys = question_keys(tiny.model, mem.rotary, tiny.tokenizer, "which lamp is blue?", head.layers)
    expected = [ids[i] for i in torch.argsort(key_maxima(keys, stack[head.layers]), descending=True).tolist()]
    assert head.ranking(mem, "which lamp is blue?") == expected


def toy_examples(count: int, seed: int, mix: torch.Tensor, n_blocks: int = 3) -> list[Example]:
    """Each question carries a fresh random concept c in its keys; its positive block carries `mix @ c`
    among noise, so only a learned map (not plain key similarity, not memorised concepts) finds it."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        concept = torch.randn(2, 2, 16, generator=gen)                      # per layer and head
        q = torch.randn(2, 2, 4, 16, generator=gen) * 0.3
        q[:, :, 1] += 3 * concept
        blocks = torch.randn(n_blocks, 2, 4, 2, 16, generator=gen)
        blocks[0, :, 2] = 3 * torch.einsum("de,she->shd", mix, concept) + 0.3 * torch.randn(2, 2, 16, generator=gen)
        order = torch.randperm(n_blocks, generator=gen)
        out.append(Example(q.half(), blocks[order].half(), [int((order == 0).nonzero())], [""] * n_blocks))
    return out


def test_training_raises_recall_on_held_apart_toy_samples():
    mix = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(7)))[0]
    hay = HaystackBlocks(torch.randn(40, 2, 4, 2, 16, generator=torch.Generator().manual_seed(9)).half())
    train_set, test_set = toy_examples(96, seed=1, mix=mix), toy_examples(48, seed=2, mix=mix)
    head = AddressHead(layers=[0, 1], kv_heads=2, head_dim=16, rank=16)
    before = recall_at(head_rankings(head, test_set, hay), positives(test_set, hay), (1, 4))
    summary = train(head, train_set, hay, steps=150, batch_size=16, lr=1e-2)
    after = recall_at(head_rankings(head, test_set, hay), positives(test_set, hay), (1, 4))
    assert summary["steps"] == 150 and head.temperature == 1.0
    assert before["@1"] < 0.3 and after["@1"] > before["@1"] + 0.4, (before, after)
    table = evaluate(test_set, hay, {"head": head})
    assert table["all"]["samples"] == 48 and table["all"]["head"]["@1"] == after["@1"]


def test_distractors_and_in_batch_negatives_never_answer_the_question():
    """Another story that names the asked character could answer the question: it is neither a distractor in
    the benchmark nor a negative in training; an unrelated one is both."""
    def ex(question: str, text: str) -> Example:
        return Example(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 1, 1, 4), [0], [text], question, "babi")

    examples = [ex("Where is Daniel?", "Daniel went to the garden."),
                ex("Where is Mary?", "Later Daniel moved to the kitchen."),
                ex("Where is Sandra?", "Sandra journeyed to the office."),
                ex("Where is Daniel?", "Daniel travelled to the hallway.")]
    assert distractors(examples, 0, 8) == [2]
    _, _, _, allowed, positive = _batch(examples, HaystackBlocks(torch.zeros(0, 1, 1, 1, 4)), shared_store=True)
    assert allowed[0].tolist() == [True, False, True, False] and positive[0].tolist() == [True, False, False, False]
    assert allowed[2].tolist() == [True, True, True, True]  # "Sandra" appears in no other story


def test_save_load_round_trip_and_another_model_is_refused(tmp_path):
    model = tiny_llama(seed=0)
    head = AddressHead.for_model(model, rank=4)
    with torch.no_grad():
        head.v.normal_()
        head.temperature = 0.5
    q, bank = torch.randn(2, 2, 5, 16), torch.randn(2, 20, 4, 2, 16)
    head.save(tmp_path / "h", model, "tiny", note="x")
    assert {p.name for p in (tmp_path / "h").iterdir()} == {WEIGHTS, CONFIG}
    loaded = load_address_head(tmp_path / "h" / CONFIG, tiny_llama(seed=0))
    assert loaded.temperature == 0.5 and torch.equal(loaded.scores(q, bank), head.scores(q, bank))
    with pytest.raises(L2MError, match="trained on model tiny") as err:
        load_address_head(tmp_path / "h", tiny_llama(seed=1))
    assert "\n" not in str(err.value)
    with pytest.raises(L2MError, match="address head not found"):
        load_address_head(tmp_path / "missing", model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(L2MError, match="no address head"):
        load_address_head(tmp_path / "empty", model)


def test_rrf_rewards_agreement_and_keeps_first_seen_order():
    assert rrf([[1, 2, 3], [3, 4]]) == [3, 1, 2, 4]
    assert rrf([[], [5, 6]]) == [5, 6]


def test_memory_with_a_head_reads_the_heads_top_block(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small())
    mem.ingest_document(TEXT, "doc.txt")
    assert len(mem.meta) > mem.settings.max_read_blocks
    query = "zqxj vwk"  # no word of it in memory: BM25 addresses nothing
    assert mem.ask(query, max_new_tokens=1).lexical == []
    head = AddressHead.for_model(tiny.model)
    mem.address_head = head
    top = head.ranking(mem, query)[0]
    answer = mem.ask(query, max_new_tokens=1)
    assert top in answer.lexical and all(top in ids for ids in answer.read_set.values())
    forked = mem.fork(tmp_path / "fork")
    assert forked.address_head is head and top in forked.ask(query, max_new_tokens=1).lexical


# ---- command line (in-process: a subprocess per call would cost seconds of imports) -----------------

def l2m(*args: str, cwd: Path):
    from click.testing import CliRunner

    from cli.main import cli

    before = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("head")
    done = l2m("train", "--task", "address-head", "--model", str(tiny_model_dir), "--out", str(out),
               "--samples", "3", "--haystack-tokens", "256", "--steps", "3", "--batch-size", "4",
               "--eval-examples", "2", "--device", "cpu", "--json", cwd=out)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["task"] == "address-head" and summary["steps"] == 3 and "recall_passkey" in summary
    return out


@pytest.fixture
def store(tiny_model_dir, tmp_path) -> Path:
    (tmp_path / "notes.txt").write_text(TEXT)
    assert l2m("ingest", "--model", str(tiny_model_dir), "--device", "cpu", cwd=tmp_path).exit_code == 0
    return tmp_path


def test_cli_trains_a_head_and_ask_uses_it(trained_dir, tiny_model_dir, store):
    assert json.loads((trained_dir / CONFIG).read_text())["base"]["name"] == str(tiny_model_dir)
    plain = l2m("ask", "zqxj?", "--max-tokens", "2", "--json", cwd=store)
    assert plain.exit_code == 0 and json.loads(plain.stdout)["lexical_blocks"] == []  # BM25 matches nothing
    done = l2m("ask", "zqxj?", "--address-head", str(trained_dir), "--max-tokens", "2", "--json", cwd=store)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["lexical_blocks"]  # the head addressed blocks


def test_cli_bad_head_is_one_line_exit_2(store):
    (store / "q.jsonl").write_text('{"question": "anything?"}\n')
    for command in (["ask", "anything?"], ["batch", "q.jsonl", "--out", "a.jsonl"], ["chat"]):
        missing = l2m(*command, "--address-head", str(store / "nope"), cwd=store)
        assert missing.exit_code == 2 and len(missing.stderr.strip().splitlines()) == 1, command
        assert "address head not found" in missing.stderr
    other = tiny_llama(seed=1)
    AddressHead.for_model(other).save(store / "other", other, "other-tiny")
    refused = l2m("ask", "anything?", "--address-head", str(store / "other"), cwd=store)
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "trained on model other-tiny" in refused.stderr
