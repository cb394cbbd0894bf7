"""The write path's mechanics: compressed keys/values wait on disk until the document's one transaction, all
layers compress together as each would alone, and memoized rotary tables never go stale."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import torch

from l2m_core import codec
from l2m_core.loading import LoadedModel, load_model
from l2m_core.memory import Memory
from l2m_core.rope import Rotary
from l2m_core.settings import CODECS, MemorySettings
from l2m_core.spill import KVSpill, SpilledKV
from l2m_core.store import block_kv, blocks

TEXT = "\n".join(f"Line {i}: the {['red', 'green', 'blue'][i % 3]} lamp number {i * 7} glows." for i in range(1, 40))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


def small() -> MemorySettings:
    return MemorySettings(block_size=16, chunk_size=32, sink=16, local=48, max_read_blocks=6, hot_budget_mb=4)


def stored_rows(mem: Memory) -> list[tuple]:
    with mem.files.engine.connect() as conn:
        return conn.execute(sa.select(blocks.c.seq, blocks.c.text, blocks.c.repr, block_kv.c.layer, block_kv.c.k,
                                      block_kv.c.v).join(block_kv).order_by(blocks.c.id, block_kv.c.layer)).all()


def test_ingest_holds_no_block_keys_in_ram_and_stores_what_the_in_ram_path_stores(tiny, tmp_path, monkeypatch):
    """`ingest_document` hands the transaction blocks whose keys and values are read back from the spill file;
    the rows equal those of `encode_document` + `write_encoded` (the cluster's in-RAM path)."""
    spilled = Memory.create(tmp_path / "a", tiny, small())
    written = []
    write = spilled.cold.write

    def watch(document, replacing):
        written.extend(block.kv for block in document.blocks)
        return write(document, replacing)

    monkeypatch.setattr(spilled.cold, "write", watch)
    spilled.ingest_document(TEXT, "lamps.txt")
    assert len(written) > 2 and all(isinstance(kv, SpilledKV) for kv in written)
    in_ram = Memory.create(tmp_path / "b", tiny, small())
    in_ram.write_encoded(in_ram.encode_document(TEXT, "lamps.txt"))
    assert stored_rows(spilled) == stored_rows(in_ram)


def test_a_write_that_fails_midway_leaves_the_older_version_whole(tiny, tmp_path, monkeypatch):
    """The spill is read inside the one transaction: a failure there (a full or broken disk) rolls back
    everything, so readers see the older version of the document, whole, and nothing of the new one."""
    mem = Memory.create(tmp_path / "s", tiny, small())
    old = mem.ingest_document(TEXT, "lamps.txt")
    rows = stored_rows(mem)
    reads = []
    read = KVSpill.read

    def fail_on_third(self, offset, size):
        reads.append(offset)
        if len(reads) == 3:
            raise OSError("disk gone")
        return read(self, offset, size)

    monkeypatch.setattr(KVSpill, "read", fail_on_third)
    with pytest.raises(OSError, match="disk gone"):
        mem.ingest_document(TEXT.upper(), "lamps.txt")
    assert len(reads) == 3
    reader = Memory.open(tmp_path / "s", tiny)
    assert reader.verify() == [] and stored_rows(reader) == rows
    assert reader.blocks_for("lamps.txt") == [s.block_id for s in old]


def test_a_spill_hands_back_each_blocks_blobs(tmp_path):
    with KVSpill(tmp_path) as spill:
        first = spill.add([(b"k0", b"v00"), (b"", b"v1")])
        second = spill.add([(b"K" * 5, b"V" * 7)])
        assert list(second) == [(b"K" * 5, b"V" * 7)] and list(first) == [(b"k0", b"v00"), (b"", b"v1")]
        assert len(first) == 2 and first[1] == (b"", b"v1")
    assert list(tmp_path.iterdir()) == []  # an unnamed file: nothing left behind


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
