"""The write path's mechanics: blocks are staged in the database while the document is encoded and it becomes
visible in one transaction, all layers compress together as each would alone, memoized rotary tables never
go stale, and a chunk is encoded over the window the design says."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import sqlalchemy as sa
import torch

from l2m_core import codec
from l2m_core.loading import LoadedModel, load_model
from l2m_core.memory import Memory
from l2m_core.rope import Rotary
from l2m_core.settings import CODECS, MemorySettings
from l2m_core.store import LIVE, PENDING_PREFIX, STAGED_BLOCKS, Staging, block_kv, blocks, documents

TEXT = "\n".join(f"Line {i}: the {['red', 'green', 'blue'][i % 3]} lamp number {i * 7} glows." for i in range(1, 40))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


def small() -> MemorySettings:
    return MemorySettings(block_size=16, chunk_size=32, sink=16, local=48, max_read_blocks=6, hot_budget_mb=4)


def stored_rows(mem: Memory, live: bool = True) -> list[tuple]:
    """Every block's rows (of live documents only, or of all, pending ones included)."""
    query = sa.select(blocks.c.seq, blocks.c.text, blocks.c.repr, block_kv.c.layer, block_kv.c.k, block_kv.c.v
                      ).join(block_kv).join(documents).order_by(blocks.c.id, block_kv.c.layer)
    with mem.files.engine.connect() as conn:
        return conn.execute(query.where(LIVE) if live else query).all()


def test_ingest_stages_blocks_as_it_encodes_and_stores_what_the_in_ram_path_stores(tiny, tmp_path, monkeypatch):
    """`ingest_document` writes each chunk's blocks while the model runs on (small transactions under a pending
    document that no reader sees), so no document's keys and values wait in RAM; the rows equal those of
    `encode_document` + `write_encoded` (the cluster's in-RAM path, one transaction)."""
    staged = Memory.create(tmp_path / "a", tiny, small())
    seen = []  # what another process would see after each staged transaction
    flush = Staging._flush

    def watch(self):
        flush(self)
        other = Memory.open(tmp_path / "a", tiny)
        seen.append((len(self.block_ids), other.stats()["documents"], other.live_sources(), other.verify()))

    monkeypatch.setattr(Staging, "_flush", watch)
    staged.ingest_document(TEXT, "lamps.txt")
    assert len(seen) > 2 and seen[0][0] == STAGED_BLOCKS and seen[1][0] == 2 * STAGED_BLOCKS
    assert all(view[1:] == (0, {}, []) for view in seen)
    in_ram = Memory.create(tmp_path / "b", tiny, small())
    in_ram.write_encoded(in_ram.encode_document(TEXT, "lamps.txt"))
    assert stored_rows(staged) == stored_rows(in_ram)
    assert Memory.open(tmp_path / "a", tiny).live_sources() == in_ram.live_sources()


def test_a_write_that_fails_midway_leaves_the_older_version_whole(tiny, tmp_path, monkeypatch):
    """A failure while staging (a full or broken disk) leaves readers the older version of the document, whole,
    and removes what was staged of the new one."""
    mem = Memory.create(tmp_path / "s", tiny, small())
    old = mem.ingest_document(TEXT, "lamps.txt")
    rows = stored_rows(mem)
    flushes = []
    flush = Staging._flush

    def fail_on_third(self):
        flushes.append(len(self.block_ids))
        if len(flushes) == 3:
            raise OSError("disk gone")
        flush(self)

    monkeypatch.setattr(Staging, "_flush", fail_on_third)
    with pytest.raises(OSError, match="disk gone"):
        mem.ingest_document(TEXT.upper(), "lamps.txt")
    assert flushes == [0, STAGED_BLOCKS, 2 * STAGED_BLOCKS]
    reader = Memory.open(tmp_path / "s", tiny)
    assert reader.verify() == [] and stored_rows(reader) == rows == stored_rows(reader, live=False)
    assert reader.blocks_for("lamps.txt") == [s.block_id for s in old]


def test_what_a_dead_writer_staged_is_removed_by_the_next_writer(tiny, tmp_path):
    """A writer killed while staging leaves a pending document; readers never see it, and the next ingest
    removes it when its process no longer runs (a live writer's is left alone)."""
    mem = Memory.create(tmp_path / "s", tiny, small())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid in (os.getpid(), int(dead.stdout)):
        staging = mem.cold.stage()
        with mem.files.engine.begin() as conn:  # as if written by `pid`
            conn.execute(documents.update().where(documents.c.id == staging.doc_id).values(
                source=f"{PENDING_PREFIX}{socket.gethostname()} {pid} x"))
        staging.add(next(iter(mem.encode_document(TEXT, f"by {pid}").blocks)))
        staging._flush()
    pending = lambda: len(stored_rows(mem, live=False))  # noqa: E731
    before = pending()
    assert before > len(stored_rows(mem)) == 0 and Memory.open(tmp_path / "s", tiny).stats()["documents"] == 0
    mem.ingest_document(TEXT, "lamps.txt")
    assert pending() == before // 2 + len(stored_rows(mem))  # the dead writer's block is gone, the live one's kept
    assert mem.verify() == [] and list(mem.live_sources()) == ["lamps.txt"]


@pytest.mark.parametrize("name", CODECS)
def test_layers_compressed_together_are_each_layer_compressed_alone(name):
    x = torch.randn(3, 17, 2, 6) * torch.linspace(0.1, 20, 6)
    x[1] = 0  # a silent layer: its scale is clamped, not borrowed from another layer
    together = codec.encode_layers(x.transpose(1, 2).contiguous().transpose(1, 2), name)
    alone = [codec.encode_layers(x[i:i + 1], name)[0] for i in range(3)]
    assert together == alone and len(set(together)) == 3
    assert all(len(b) == codec.encoded_size((17, 2, 6), name) for b in together)


def test_memoized_rotary_tables_follow_the_positions_given(tiny):
    rotary = Rotary(tiny.model)
    k = torch.randn(1, 2, 10, 16)
    first = torch.arange(10)
    turned = rotary.rotate(k, first, 0)
    for start in range(1, 30):  # many tensors come and go; each gets its own table
        positions = torch.arange(start, start + 10)
        fresh = Rotary(tiny.model).rotate(k, positions, 1)
        assert torch.equal(rotary.rotate(k, positions, 1), fresh)
    assert torch.equal(rotary.rotate(k, first, 1), turned)


@pytest.mark.parametrize("local", [0, 16, 48, 4096])
def test_a_chunk_is_encoded_after_the_sink_and_the_last_local_tokens(tiny, tmp_path, local):
    """What a stored block's keys and values were computed over: the document's first `sink` tokens, the `local`
    tokens before its chunk (none with `local=0`, all earlier ones with 4096) and the chunk itself, exactly as
    the plain model computes them over that window."""
    settings = MemorySettings(block_size=16, chunk_size=32, sink=16, local=local, codec="fp32", hot_budget_mb=4)
    mem = Memory.create(tmp_path / "s", tiny, settings)
    ids = tiny.tokenizer(TEXT, add_special_tokens=False)["input_ids"][:128]
    t0 = 96  # the fourth chunk
    window = ids[:16] + ids[max(16, t0 - local):t0] + ids[t0:t0 + 32]
    before = len(window) - 32
    with torch.inference_mode():
        cache = tiny.model(torch.tensor([window]), use_cache=True).past_key_values
        ours = [block for block in mem._encode_blocks(ids) if block[0] >= t0]
    rotary, positions = Rotary(tiny.model), torch.arange(before, len(window))
    keys, values = torch.cat([b[2] for b in ours], dim=2), torch.cat([b[3] for b in ours], dim=2)
    for layer, plain in enumerate(cache.layers):
        assert torch.allclose(keys[layer], rotary.unrotate(plain.keys[:, :, before:], positions, layer)[0], atol=1e-4)
        assert torch.allclose(values[layer], plain.values[0, :, before:], atol=1e-4)


def test_ingest_ends_each_pass_once_the_last_layers_keys_and_values_are_recorded(tiny, tmp_path):
    """Nothing after the last layer's keys and values (its attention output and MLP, the logits) changes a stored
    block, so ingest never computes it; a question still runs the whole model."""
    mem = Memory.create(tmp_path / "s", tiny, small())
    layers = tiny.model.model.layers
    calls = []
    hooks = [module.register_forward_hook(lambda *_, name=name: calls.append(name))
             for name, module in [("first MLP", layers[0].mlp), ("last MLP", layers[-1].mlp),
                                  ("logits", tiny.model.lm_head)]]
    try:
        mem.ingest_document(TEXT, "lamps.txt")
        written = set(calls)
        calls.clear()
        mem.ask("Which lamp glows?", max_new_tokens=2)
    finally:
        for hook in hooks:
            hook.remove()
    assert written == {"first MLP"} and mem.blocks_for("lamps.txt")
    assert {"first MLP", "last MLP", "logits"} <= set(calls)
