"""One entry point that returns a ready model and tokenizer, whatever the source.

Sources: the embedded default (no argument), a local Hugging Face directory, a `.gguf` file, or a
hub id. A GGUF file is dequantized once, straight to the dtype the model is loaded in, and cached as
safetensors beside the other models in `$L2M_HOME/models/`, so later loads take well under a second
instead of ~18 s (and a 7B model's cache takes 15 GB in bf16 instead of 28 GB in fp32).

The dtype: `auto` is `$L2M_DTYPE` when set; else bf16 on CUDA (fp16 on GPUs without bf16); on the CPU bf16
when the fp32 weights would take more than half the machine's memory, else the dtype this CPU runs faster,
measured once per machine (`cpu_dtype`: bf16 matmuls were 5x slower than fp32 on one of our CPUs and 2x
faster on another).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from l2m_core import cpu_dtype, provision
from l2m_core.errors import L2MError
from l2m_core.paths import l2m_home

DEFAULT_MODEL = provision.DEFAULT.name
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ENV = "L2M_DTYPE"


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    fingerprint: str
    device: torch.device
    load_seconds: float

    @property
    def config(self):
        return self.model.config

    @property
    def dtype_name(self) -> str:
        """The dtype the weights are loaded in, as `load_model` takes it ("float32", "bfloat16")."""
        return str(self.model.dtype).removeprefix("torch.")


def kv_geometry(config) -> tuple[int, int]:
    """(key/value heads, head size) of a decoder config: the shape of every stored key and value. Configs may
    leave either unset (None), meaning one key/value head per query head and hidden size / heads."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return kv_heads, head_dim


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, source: str | os.PathLike | None = None) -> torch.dtype:
    """The dtype to load in; for `auto` see the module docstring (`source`, a model directory or GGUF file, is
    sized only when the choice depends on it)."""
    if dtype == "auto":
        dtype = os.environ.get(DTYPE_ENV) or "auto"
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        budget = _memory_bytes() // 2
        if source is not None and (fp32 := _fp32_bytes(Path(source), budget)) and fp32 > budget:
            return torch.bfloat16
        return cpu_dtype.fastest()
    if dtype not in _DTYPES:
        raise L2MError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _fp32_bytes(source: Path, budget: int) -> int | None:
    """The model's weights in fp32, from a directory's safetensors headers or a GGUF file's tensor list; None
    if the files do not say. A GGUF file is parsed (seconds) only when even at 1.5 bits per weight its fp32
    weights could exceed `budget`."""
    try:
        if source.suffix == ".gguf":
            if source.stat().st_size * 32 / 1.5 <= budget:
                return None
            from gguf import GGUFReader

            return 4 * sum(int(t.n_elements) for t in GGUFReader(source).tensors)
        total = 0
        for file in source.glob("*.safetensors"):
            with safe_open(str(file), "pt") as weights:
                total += sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
        return 4 * total or None
    except (OSError, ValueError, SafetensorError):
        return None  # unreadable here: from_pretrained reports it in one line


def load_model(spec: str | os.PathLike | None = None, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load `spec` (None for the default model) frozen, in eval mode, on `device`, in `dtype`."""
    start = time.perf_counter()
    dev = resolve_device(device)
    name, source, gguf_cache = _locate(spec)
    torch_dtype = resolve_dtype(dtype, dev, source)
    directory = str(_cached_conversion(Path(source), gguf_cache, torch_dtype)) if gguf_cache else source
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError, SafetensorError) as exc:  # the last: a truncated or damaged weights file
        raise L2MError(f"cannot load model {name}: {str(exc).splitlines()[0]}") from exc
    model.to(dev).eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, name, fingerprint(model), dev, time.perf_counter() - start)


def fingerprint(model: PreTrainedModel) -> str:
    """Identifies a model's weights and shape, independent of dtype and device (stores check it)."""
    cfg = model.config
    shape = {k: getattr(cfg, k, None) for k in (
        "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "vocab_size")}
    sample = model.get_input_embeddings().weight[:32].detach().to("cpu", torch.bfloat16)
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    digest.update(sample.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()[:16]


def read_trained_config(path: str | Path, weights: str, config: str, fmt: str, version: int, what: str,
                        task: str) -> tuple[Path, dict]:
    """The directory and JSON of something trained (`what`, by `l2m train --task TASK`), saved as `weights`
    + `config` in one directory; `path` is the directory or one of its two files."""
    path = Path(path).expanduser()
    directory = path.parent if path.is_file() and path.name in (weights, config) else path
    if not directory.is_dir():
        raise L2MError(f"{what} not found: {path}")
    try:
        data = json.loads((directory / config).read_text())
    except (OSError, ValueError):
        raise L2MError(f"{directory} holds no {what} (no readable {config}); train one with "
                       f"`l2m train --task {task}`") from None
    if data.get("format") != fmt or data.get("version") != version:
        raise L2MError(f"{directory / config} is not an {fmt} v{version} file")
    return directory, data


def check_base(base: dict, model: PreTrainedModel, what: str) -> None:
    """Refuse a trained artefact (`what`, e.g. "address head DIR") whose JSON `base` names another model:
    its weights were trained on that model's hidden states."""
    expected, actual = base.get("fingerprint"), fingerprint(model)
    if expected != actual:
        raise L2MError(f"{what} was trained on model {base.get('name') or '?'} (fingerprint {expected}), "
                       f"not on this model (fingerprint {actual})")


def _locate(spec) -> tuple[str, str, Path | None]:
    """Map a spec to (display name, a directory `from_pretrained` can read without a network or a GGUF file,
    the cache folder for that GGUF file's conversion or None)."""
    if spec is None or str(spec) in ("", "default", DEFAULT_MODEL):
        if not provision.is_installed():
            raise L2MError(f"the default model {DEFAULT_MODEL} is not installed; run `l2m model pull`")
        return DEFAULT_MODEL, str(provision.default_gguf_path()), provision.default_model_dir() / "hf"
    path = Path(spec).expanduser()
    if str(spec).endswith(".gguf"):
        if not path.is_file():
            raise L2MError(f"GGUF file not found: {path}")
        _check_gguf_magic(path)
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return path.name, str(path), l2m_home() / "models" / f"gguf-{key}"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise L2MError(f"{path} is not a model directory (no config.json)")
        return str(path), str(path), None
    if not _looks_like_hub_id(str(spec)):
        raise L2MError(f"model not found: {spec} is not a directory, a .gguf file or a hub id (org/name)")
    return str(spec), _hub_snapshot(str(spec)), None


def _looks_like_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


def _hub_snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") or not _hub_reachable():
        raise L2MError(f"model {repo_id!r} is not a local path or .gguf file, not in the Hugging Face "
                       "cache, and the hub cannot be reached (offline)")
    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                          "*.jinja"])
    except Exception as exc:
        raise L2MError(f"cannot fetch model {repo_id!r}: {str(exc).splitlines()[0]}") from exc


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _check_gguf_magic(path: Path) -> None:
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise L2MError(f"{path} is not a GGUF file (bad magic bytes)")


def _cached_conversion(gguf: Path, cache: Path, dtype: torch.dtype) -> Path:
    """Dequantize `gguf` into safetensors + tokenizer in `dtype`, once; reuse a complete conversion in that dtype
    (or in float32, which any dtype loads from without loss). `cache` names the float32 conversion; others get
    the dtype's name appended."""
    exact = cache if dtype == torch.float32 else cache.with_name(f"{cache.name}-{str(dtype).removeprefix('torch.')}")
    for candidate in dict.fromkeys([exact, cache]):
        if _complete(candidate):
            return candidate
    print(f"converting {gguf.name} to safetensors in {str(dtype).removeprefix('torch.')} (once; about 20 s for "
          "the default model)", file=sys.stderr)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    except Exception as exc:
        raise L2MError(f"cannot read GGUF file {gguf}: {str(exc).splitlines()[0]}") from exc
    model.hf_quantizer = None  # weights are dequantized now; let save_pretrained write them plainly
    model.config.__dict__.pop("quantization_config", None)
    # Each process writes its own folder and moves it into place, so two first runs at once (a batch's
    # workers, two shells) never write into one folder nor delete a conversion the other is loading.
    exact.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{exact.name}.", suffix=".partial", dir=exact.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    sizes = {p.name: p.stat().st_size for p in tmp.glob("*.safetensors")}
    (tmp / "l2m-complete.json").write_text(json.dumps({"source": str(gguf), "dtype": str(dtype), "sizes": sizes}))
    if exact.exists() and not _complete(exact):
        shutil.rmtree(exact, ignore_errors=True)
    try:
        os.replace(tmp, exact)
    except OSError:  # another process moved its complete conversion there first: use that one
        shutil.rmtree(tmp, ignore_errors=True)
        if not _complete(exact):
            raise
    return exact


def _complete(cache: Path) -> bool:
    """A conversion is used only when its marker lists every file at its written size: a truncated or
    half-written one is rebuilt, never loaded."""
    try:
        sizes = json.loads((cache / "l2m-complete.json").read_text())["sizes"]
        return all((cache / n).is_file() and (cache / n).stat().st_size == s for n, s in sizes.items())
    except (OSError, ValueError, KeyError):
        return False
