"""The memory engine: exactness of the read path, tiers, persistence, and the errors a user can cause."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest
import torch

from l2m_core import codec
from l2m_core.errors import L2MError
from l2m_core.loading import LoadedModel, load_model
from l2m_core.memory import Enclosing, Memory, reading_head
from l2m_core.rope import Rotary
from l2m_core.settings import MemorySettings
from l2m_core.tiny import tiny_llama

TEXT = "\n".join(f"Line {i}: the {['red', 'green', 'blue'][i % 3]} lamp number {i * 7} glows." for i in range(1, 40))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


def small(**changes) -> MemorySettings:
    base = dict(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, hot_budget_mb=4)
    return MemorySettings(**{**base, **changes})


def test_rerotation_is_exact_and_matches_the_model(tiny):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rot = Rotary(tiny.model)
    k = torch.randn(1, 2, 10, 16)
    pos = torch.arange(100, 110)
    assert torch.allclose(rot.unrotate(rot.rotate(k, pos, 0), pos, 0), k, atol=1e-5)
    cos, sin = tiny.model.model.rotary_emb(k, pos[None])
    _, expected = apply_rotary_pos_emb(k, k, cos, sin)
    assert torch.allclose(rot.rotate(k, pos, 1), expected, atol=1e-6)


@pytest.mark.parametrize("name, levels", [("int8", 127), ("int4", 7)])
def test_quantization_error_is_bounded_by_half_a_step(name, levels):
    x = torch.randn(64, 3, 8) * torch.linspace(0.1, 20, 8)  # outlier channels
    y = codec.decode(codec.encode(x, name), tuple(x.shape), name)
    step = x.abs().amax(dim=0) / levels
    assert ((x - y).abs() <= step / 2 + 1e-3 * step + 1e-6).all()
    assert len(codec.encode(x, name)) == codec.encoded_size(tuple(x.shape), name)


@pytest.mark.parametrize("chunk", [32, 256])
@pytest.mark.parametrize("head", ["chat", ""], ids=["reading-head", "bare"])
def test_read_path_equals_plain_model_when_everything_is_read(tiny, tmp_path, chunk, head):
    """All blocks in the read set, nothing compressed, full context while ingesting: the same logits as the
    plain model over `[reading head | document | tail]` (head and blocks at contiguous positions)."""
    settings = small(codec="fp32", chunk_size=chunk, local=4096, max_read_blocks=64, contiguous=True,
                     reading_head=reading_head(tiny.tokenizer) if head else "")
    mem = Memory.create(tmp_path / "s", tiny, settings)
    doc = TEXT[:400]
    mem.ingest_document(doc, "doc.txt")
    head_ids = tiny.tokenizer(mem.settings.reading_head, add_special_tokens=False)["input_ids"]
    assert bool(head_ids) == bool(head)
    doc_ids = tiny.tokenizer(doc, add_special_tokens=False)["input_ids"]
    tail = tiny.tokenizer(" and then", add_special_tokens=False)["input_ids"]
    ours = mem.logits(tail, pins=mem.blocks_for("doc.txt"), head=mem.settings.reading_head)
    with torch.inference_mode():
        plain = tiny.model(torch.tensor([head_ids + doc_ids + tail])).logits[0, -1]
    assert torch.allclose(ours, plain, atol=1e-4), (ours - plain).abs().max()


def test_part_of_the_document_read_sits_right_after_the_head(tiny, tmp_path):
    """Fewer blocks than the budget: still no position gap between the head and the first block read."""
    settings = small(codec="fp32", local=4096, max_read_blocks=64, contiguous=True,
                     reading_head=reading_head(tiny.tokenizer))
    mem = Memory.create(tmp_path / "s", tiny, settings)
    doc = TEXT[:400]
    spans = mem.ingest_document(doc, "doc.txt")
    first = [spans[0].block_id]
    head_ids = tiny.tokenizer(mem.settings.reading_head, add_special_tokens=False)["input_ids"]
    block_ids = tiny.tokenizer(doc, add_special_tokens=False)["input_ids"][:mem.meta[first[0]].n_tokens]
    tail = tiny.tokenizer(" and then", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        plain = tiny.model(torch.tensor([head_ids + block_ids + tail])).logits[0, -1]
    assert torch.allclose(mem.logits(tail, pins=first), plain, atol=1e-4)


def test_read_path_differs_without_the_blocks(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small(codec="fp32", local=4096, max_read_blocks=64))
    mem.ingest_document(TEXT[:400], "doc.txt")
    tail = tiny.tokenizer(" and then", add_special_tokens=False)["input_ids"]
    with_memory = mem.logits(tail, pins=mem.blocks_for("doc.txt"))
    alone = mem.logits(tail)
    assert not torch.allclose(with_memory, alone, atol=1e-3)


def test_blocks_carry_provenance(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small())
    spans = mem.ingest_document(TEXT, "lamps.txt")
    assert spans[0].line_start == 1 and spans[-1].line_end == TEXT.count("\n") + 1
    assert all(a.line_end >= b.line_start - 1 for a, b in zip(spans, spans[1:], strict=False))
    offset = TEXT.index("lamp number 140")
    block = mem.block_at("lamps.txt", offset)
    assert block in mem.blocks_for("lamps.txt", 20, 20)


def test_ask_reads_lexical_blocks_in_every_layer_and_cites_them(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small())
    mem.ingest_document(TEXT, "lamps.txt")
    mem.ingest_document("The zebra quartz vault opens with code 4417.\n" * 3, "vault.txt")
    answer = mem.ask("Which code opens the zebra quartz vault?", max_new_tokens=4)
    vault = set(mem.blocks_for("vault.txt"))
    assert vault & set(answer.lexical)
    assert all(vault & set(ids) for ids in answer.read_set.values())
    assert answer.citations and {c.source for c in answer.citations} >= {"vault.txt"}


@pytest.mark.parametrize("pool, code, first", [(4, False, 2), (0, False, 0), (4, True, 0)],
                         ids=["prose-pool", "no-pool", "code-pool"])
def test_address_pool_fuses_bm25s_order_with_the_models_over_prose(tiny, tmp_path, monkeypatch, pool, code, first):
    """With `address_pool` N, BM25's first N blocks of prose are re-ranked by reciprocal rank fusion with the
    order of the question's likelihood after each (here a stand-in that likes BM25's 3rd block best and its
    1st least, each passage under its file's name): the 3rd is read first. Off, or where code is among the
    blocks BM25 would read, BM25's order stands and the model is not asked."""
    import l2m_core.memory as memory_module

    seen = []

    def likelihoods(model, tokenizer, passages, question):
        seen.append(passages)
        return [0.0, 1.0, 3.0, 2.0]

    monkeypatch.setattr(memory_module, "question_likelihoods", likelihoods)
    mem = Memory.create(tmp_path / "s", tiny, small(lexical_top_k=1, address_pool=pool, rerank_citations=0))
    mem.ingest_document(TEXT, "lamps.txt")
    mem.enclosing = lambda ids: {b: Enclosing("", None, code=code) for b in ids}
    question = "Which red lamp glows?"
    answer = mem.ask(question, max_new_tokens=1)
    assert answer.lexical[:1] == [mem.lexical.top(question, 4)[first]]
    assert len(seen) == (pool > 0 and not code) and all(p.startswith("[lamps.txt") for p in sum(seen, []))


def test_a_store_within_the_read_budget_is_read_whole(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small(max_read_blocks=6))
    mem.ingest_document("Mary went to the garden. John moved to the kitchen.", "story.txt")
    answer = mem.ask("Which colour is it?", max_new_tokens=1)  # no word in common
    assert all(set(ids) == set(mem.meta) for ids in answer.read_set.values())


def test_lexical_addressing_finds_a_word_most_blocks_share():
    """In a store of two blocks BM25 gives a word found in both an idf of zero or less; still a match."""
    from l2m_core.addressing import LexicalIndex

    index = LexicalIndex()
    index.add(1, "Daniel went to the garden.", "a.txt")
    index.add(2, "Daniel moved to the office. Sandra left.", "a.txt")
    index.add(3, "The weather was fine.", "b.txt")
    assert set(index.top("Where is Daniel?", 2)) == {1, 2}
    assert index.top("Where is Daniel?", 5) == index.top("Where is Daniel?", 2)
    assert index.top("zebra", 3) == []


def test_stemmed_lexical_addressing_meets_word_forms_skips_question_words_and_knows_labels():
    """Stemmed (opt-in): "normalises" finds "normalize"; "which"/"does" match nothing; a body block matches
    its function's name. Plain: none of that."""
    from l2m_core.addressing import LexicalIndex

    labels = {2: "zanzibar_rate"}
    index = LexicalIndex(lambda ids: {i: labels[i] for i in ids if i in labels}, stemmed=True)
    index.add(1, "def normalize_file(file, separators=None):\n    # Normalize path separators.", "util.py")
    index.add(2, "    norm_file = file.replace(sep, '/')\n    return norm_file", "util.py")
    index.add(3, "Which file does what? It does nothing.", "notes.txt")
    assert index.top("Which function normalises paths?", 1) == [1]
    assert index.top("Which does what?", 3) == []
    assert index.top("Where is zanzibar_rate?", 3) == [2]
    labels[2] = "other"  # labels are asked for again only after the index changes
    assert index.top("Where is zanzibar_rate?", 3) == [2]
    index.add(4, "unrelated", "z.txt")
    assert index.top("Where is zanzibar_rate?", 3) == []
    plain = LexicalIndex(lambda ids: {2: "zanzibar_rate"})
    plain.add(1, "def normalize_file(file, separators=None):", "util.py")
    plain.add(2, "    return norm_file", "util.py")
    assert plain.top("normalises", 2) == [] and plain.top("zanzibar_rate", 2) == []


def test_pins_are_read_by_every_layer_and_cited_first(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small())
    mem.ingest_document(TEXT, "lamps.txt")
    pinned = mem.blocks_for("lamps.txt", 30, 31)
    answer = mem.ask("anything at all", max_new_tokens=1, pins=pinned)
    assert all(set(pinned) <= set(ids) for ids in answer.read_set.values())
    assert set(pinned) <= set(answer.citations[0].block_ids)
    other = mem.ingest_document("A note on the weather, unrelated to lamps.", "weather.txt")[0].block_id
    cites = mem._citations({pinned[0]: 0.1, other: 0.9}, set(pinned))  # a pinned block outranks heavier ones
    assert [c.source for c in cites] == ["lamps.txt", "weather.txt"] and cites[1].weight == 0.9
    # unpinned runs: the best addressed first, however little mass it drew; then by mass
    third = mem.blocks_for("lamps.txt", 1, 1)[0]
    cites = mem._citations({pinned[0]: 0.5, other: 0.1, third: 0.4}, set(), hits=[other])
    assert [c.block_ids for c in cites] == [(other,), (pinned[0],), (third,)]
    # a question asking for a name ("which method of PathSpec ...") names other things as context: the
    # addressed run comes before the pinned one
    cites = mem._citations({pinned[0]: 0.5, other: 0.1}, set(pinned), hits=[other], pins_first=False)
    assert [c.source for c in cites] == ["weather.txt", "lamps.txt"]
    assert mem._citations({pinned[0]: 0.5, other: 0.1}, set(pinned), hits=[other])[0].source == "lamps.txt"
    # a run is named for the block its words addressed, not for the heaviest (a neighbouring definition)
    run = mem.blocks_for("lamps.txt")[:2]
    mem.enclosing = lambda ids: {b: Enclosing(f"def_{b}", None) for b in ids}
    cites = mem._citations({run[0]: 0.1, run[1]: 0.9}, set(), hits=[run[0]])
    assert cites[0].block_ids == tuple(run) and cites[0].label == f"def_{run[0]}"
    assert mem._citations({run[0]: 0.1, run[1]: 0.9}, set())[0].label == f"def_{run[1]}"


def test_reingest_unchanged_is_free_and_changed_replaces(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small())
    first = mem.ingest_document(TEXT, "lamps.txt")
    assert mem.ingest_document(TEXT, "lamps.txt") == first
    second = mem.ingest_document(TEXT + "\nA new line.", "lamps.txt")
    assert not {s.block_id for s in first} & {s.block_id for s in second}
    assert set(mem.blocks_for("lamps.txt")) == {s.block_id for s in second}
    assert mem.retire_document("lamps.txt") == len(second)
    assert mem.blocks_for("lamps.txt") == [] and mem.live_sources() == {}


def test_hot_tier_respects_budget_and_counts_hits(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small(hot_budget_mb=0.05))
    mem.ingest_document(TEXT * 2, "lamps.txt")
    for _ in range(2):
        mem.ask("green lamp number 70", max_new_tokens=1)
    stats = mem.stats()["hot_tier"]
    assert stats["bytes"] <= stats["budget"] and stats["hits"] > 0 and stats["misses"] > 0


def test_hot_tier_evicts_the_least_recently_used():
    from l2m_core.hot_tier import HotTier

    entry = torch.zeros(4), torch.zeros(4)  # 32 bytes
    hot = HotTier(budget_bytes=64)
    hot.put((1, 0), *entry)
    hot.put((2, 0), *entry)
    assert hot.get((1, 0)) is not None  # (2, 0) is now the oldest
    hot.put((3, 0), *entry)
    assert (1, 0) in hot and (3, 0) in hot and (2, 0) not in hot and hot.used == 64


def test_int8_store_is_about_half_of_fp16(tiny, tmp_path):
    sizes = {}
    for name in ("int8", "fp16"):
        mem = Memory.create(tmp_path / name, tiny, small(codec=name))
        mem.ingest_document(TEXT, "lamps.txt")
        sizes[name] = mem.stats()["kv_bytes_per_token"]
    assert sizes["int8"] < 0.6 * sizes["fp16"]


def test_reopened_in_another_process_answers_the_same(tiny, tiny_model_dir, tmp_path):
    store = tmp_path / "s"
    with Memory.create(store, tiny, small()) as mem:
        mem.ingest_document(TEXT, "lamps.txt")
        here = mem.ask("Which lamp is number 91?", max_new_tokens=8).to_dict()
    script = textwrap.dedent(f"""
        import json
        from l2m_core.loading import load_model
        from l2m_core.memory import Memory
        mem = Memory.open({str(store)!r}, load_model({str(tiny_model_dir)!r}, device="cpu"))
        print(json.dumps(mem.ask("Which lamp is number 91?", max_new_tokens=8).to_dict()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    there = json.loads(out.strip().splitlines()[-1])
    assert there["answer"] == here["answer"] and there["citations"] == here["citations"]


def test_fork_is_independent(tiny, tmp_path):
    mem = Memory.create(tmp_path / "a", tiny, small())
    mem.ingest_document(TEXT, "lamps.txt")
    fork = mem.fork(tmp_path / "b")
    fork.retire_document("lamps.txt")
    fork.ingest_document("other text entirely, long enough to fill a block or two", "other.txt")
    assert set(Memory.open(tmp_path / "a", tiny).live_sources()) == {"lamps.txt"}
    assert set(fork.live_sources()) == {"other.txt"}


def test_store_from_another_model_is_refused(tiny, tmp_path):
    Memory.create(tmp_path / "s", tiny, small()).close()
    other = LoadedModel(tiny_llama(seed=5), tiny.tokenizer, "other", "0000000000000000", tiny.device, 0.0)
    with pytest.raises(L2MError, match="was built with model"):
        Memory.open(tmp_path / "s", other)


def test_unsupported_architecture_is_refused(tiny, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300))
    with pytest.raises(L2MError, match="does not support 'gpt2'"):
        Memory.create(tmp_path / "s", LoadedModel(gpt2, tiny.tokenizer, "gpt2", "x", tiny.device, 0.0))


@pytest.mark.parametrize("damage, message", [
    (lambda p: None, "no memory store"),
    (lambda p: p.mkdir(), "not a memory store"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text("{oops")), "damaged"),
])
def test_not_a_store(tiny, tmp_path, damage, message):
    path = tmp_path / "s"
    damage(path)
    with pytest.raises(L2MError, match=message):
        Memory.open(path, tiny)


@pytest.mark.parametrize("keep", [lambda size: size // 3, lambda size: size - 100], ids=["third", "torn-last-page"])
def test_truncated_database_is_reported(tiny, tmp_path, keep):
    with Memory.create(tmp_path / "s", tiny, small()) as mem:
        mem.ingest_document(TEXT, "lamps.txt")
    db = tmp_path / "s" / "memory.db"
    for extra in ("-wal", "-shm"):
        (tmp_path / "s" / f"memory.db{extra}").unlink(missing_ok=True)
    db.write_bytes(db.read_bytes()[: keep(db.stat().st_size)])
    with pytest.raises(L2MError, match="damaged"):
        Memory.open(tmp_path / "s", tiny)


def test_opening_checks_cheaply_and_verify_checks_the_whole_file(tiny, tmp_path):
    """Damage only a full scan finds (a page no table uses) does not stop opening; `verify` reports it."""
    with Memory.create(tmp_path / "s", tiny, small()) as mem:
        mem.ingest_document(TEXT, "lamps.txt")
    db = tmp_path / "s" / "memory.db"
    data = bytearray(db.read_bytes())
    page_size, pages = int.from_bytes(data[16:18], "big"), int.from_bytes(data[28:32], "big")
    data[28:32] = (pages + 1).to_bytes(4, "big")
    db.write_bytes(bytes(data) + bytes(page_size))
    with Memory.open(tmp_path / "s", tiny) as mem:
        assert any(f"Page {pages + 1} is never used" in p for p in mem.verify())


@pytest.mark.parametrize("text, message", [("   \n", "empty"), (b"\xff\xfe bad bytes", "not UTF-8")])
def test_bad_text_is_refused_and_store_untouched(tiny, tmp_path, text, message):
    mem = Memory.create(tmp_path / "s", tiny, small())
    mem.ingest_document(TEXT, "lamps.txt")
    with pytest.raises(L2MError, match=message):
        mem.ingest_document(text, "bad.txt")
    assert set(mem.live_sources()) == {"lamps.txt"}


def test_hot_budget_too_small_for_one_block(tiny, tmp_path):
    with pytest.raises(L2MError, match="too small for one block"):
        Memory.create(tmp_path / "s", tiny, small(hot_budget_mb=0.001))


def test_store_files_are_user_only(tiny, tmp_path):
    with Memory.create(tmp_path / "s", tiny, small()) as mem:
        mem.ingest_document(TEXT, "lamps.txt")
    for path in [tmp_path / "s", *(tmp_path / "s").iterdir()]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_verify_finds_damage_and_compact_keeps_answers(tiny, tmp_path):

    from l2m_core.store import block_kv

    mem = Memory.create(tmp_path / "s", tiny, small())
    mem.ingest_document(TEXT, "lamps.txt")
    mem.ingest_document(TEXT.upper(), "upper.txt")
    assert mem.verify() == []
    mem.retire_document("upper.txt")
    before = mem.ask("the blue lamp", max_new_tokens=4).text
    mem.compact()
    assert mem.verify() == [] and mem.ask("the blue lamp", max_new_tokens=4).text == before
    with mem.files.engine.begin() as conn:
        conn.execute(block_kv.delete().where(block_kv.c.block_id == min(mem.meta), block_kv.c.layer == 0))
    assert any("layers" in p for p in mem.verify())


def test_encode_then_write_from_a_write_only_handle_is_idempotent(tiny, tmp_path):
    """The cluster's two halves: one handle encodes, a write-only one (index=False, as a worker opens it) writes
    in one transaction; writing the same text again (a worker died after its commit) adds nothing and hands
    back the same blocks; a new version replaces the old one's blocks."""
    reader = Memory.create(tmp_path / "s", tiny, small())
    writer = Memory.open(tmp_path / "s", tiny, index=False)
    document = reader.encode_document(TEXT, "lamps.txt")
    assert reader.live_sources() == {}  # encoding writes nothing
    spans = writer.write_encoded(document)
    assert writer.meta == {} and writer.write_encoded(document) == spans
    assert reader.refresh() and reader.blocks_for("lamps.txt") == [s.block_id for s in spans]
    assert reader.verify() == [] and reader.stats()["blocks"] == len(spans)
    newer = writer.write_encoded(reader.encode_document(TEXT + "\nLine 40: a new lamp.", "lamps.txt"))
    assert reader.refresh() and reader.blocks_for("lamps.txt") == [s.block_id for s in newer]
    assert min(s.block_id for s in newer) > max(s.block_id for s in spans) and reader.verify() == []


def test_a_reader_sees_documents_written_by_another_handle(tiny, tmp_path):
    writer = Memory.create(tmp_path / "s", tiny, small())
    writer.ingest_document(TEXT, "lamps.txt")
    reader = Memory.open(tmp_path / "s", tiny)
    writer.ingest_document("The zebra quartz vault opens with code 4417.\n" * 3, "vault.txt")
    writer.retire_document("lamps.txt")
    answer = reader.ask("zebra quartz vault code", max_new_tokens=2)
    assert set(answer.lexical) <= set(reader.blocks_for("vault.txt")) and answer.lexical


def test_the_write_lock_is_free_while_the_model_encodes(tiny, tmp_path):
    """Another writer takes the database's write lock at once (no waiting) while a document is encoded;
    the replaced document is still swapped atomically."""
    mem = Memory.create(tmp_path / "s", tiny, small())
    mem.ingest_document(TEXT, "lamps.txt")
    encode, probes = mem._encode_blocks, []

    def encode_while_another_writer_locks(ids):
        for number, block in enumerate(encode(ids)):
            if number == 1:
                other = sqlite3.connect(tmp_path / "s" / "memory.db", timeout=0, isolation_level=None)
                other.execute("BEGIN IMMEDIATE")  # "database is locked" if the write lock is held
                other.execute("ROLLBACK")
                other.close()
                probes.append(number)
            yield block

    mem._encode_blocks = encode_while_another_writer_locks
    spans = mem.ingest_document(TEXT.upper(), "lamps.txt")
    assert probes == [1] and mem.verify() == []
    assert sorted(mem.blocks_for("lamps.txt")) == [s.block_id for s in spans]
    assert mem.block_text(spans[0].block_id).startswith("LINE 1: THE")


def test_per_layer_key_scores_add_blocks_within_budget(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small(attention_top_k=2, max_read_blocks=8))
    mem.ingest_document(TEXT * 2, "lamps.txt")
    answer = mem.ask("the green lamp number 77", max_new_tokens=1)
    for ids in answer.read_set.values():
        assert set(answer.lexical) <= set(ids) and len(ids) <= 8
    extra = [set(ids) - set(answer.lexical) for ids in answer.read_set.values()]
    assert all(extra) and len(answer.lexical) <= 6


def test_a_copied_document_has_the_same_blocks_and_the_store_stays_sound(tiny, tmp_path):
    mem = Memory.create(tmp_path / "s", tiny, small())
    mem.ingest_document(TEXT, "lamps.txt")
    mem.cold.copy("lamps.txt", "lamps.txt#copy1")
    assert mem.refresh() and mem.verify() == []
    original, copy = mem.blocks_for("lamps.txt"), mem.blocks_for("lamps.txt#copy1")
    assert len(copy) == len(original) and set(copy).isdisjoint(original)
    assert [mem.block_text(b) for b in copy] == [mem.block_text(b) for b in original]
    assert mem.cold.kv([copy[3]], 0)[(copy[3], 0)] == mem.cold.kv([original[3]], 0)[(original[3], 0)]
