"""A trained memory as a portable adapter: `adapter.safetensors` (weights) + `adapter.json` (shape, base).

The JSON names the base model's fingerprint (`l2m_core.loading.fingerprint`); loading the adapter onto
any other model is refused with one line, since its slots were trained on that model's hidden states.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from l2m_core.errors import L2MError
from l2m_core.lm2.attach import MemoryAugmentedModel
from l2m_core.lm2.lora import LoRA
from l2m_core.lm2.memory import LM2Memory, MemoryConfig
from l2m_core.loading import check_base, fingerprint

FORMAT = "l2m-lm2-adapter"
VERSION = 1
WEIGHTS, CONFIG = "adapter.safetensors", "adapter.json"


def named_parameters(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """All parameters of `modules`, keyed `prefix.name` (shared tensors appear once)."""
    return {f"{prefix}.{name}": p for prefix, module in modules.items() for name, p in module.named_parameters()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path))


def load_into(modules: dict[str, nn.Module], tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy saved tensors into the parameters of `modules`; every parameter must be present, and no extras."""
    params = named_parameters(modules)
    missing, extra = sorted(params.keys() - tensors.keys()), sorted(tensors.keys() - params.keys())
    if missing or extra:
        raise L2MError(f"{source} does not match this module: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, param in params.items():
            if tensors[name].shape != param.shape:
                raise L2MError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, expected "
                               f"{tuple(param.shape)}")
            param.copy_(tensors[name])


def save_adapter(model: MemoryAugmentedModel, directory: str | Path, base_name: str = "", **extra) -> Path:
    """Write the memory (and LoRA) weights and their config into `directory`; return the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS, named_parameters(model.trainable_modules()))
    lora = model.lora
    config = {
        "format": FORMAT, "version": VERSION,
        "memory": model.memory.config.to_dict(),
        "lora": None if lora is None else {"rank": lora.rank, "targets": list(lora.targets),
                                           "alpha": lora.scale * lora.rank},
        "base": {"name": base_name, "fingerprint": fingerprint(model.model),
                 "model_type": model.model.config.model_type},
        "question_template": model.question_template,
        "segment_len": model.segment_len,
        **extra,
    }
    (directory / CONFIG).write_text(json.dumps(config, indent=2))
    return directory


def read_adapter_config(path: str | Path) -> dict:
    """The adapter's JSON; `path` is the adapter directory or its `.safetensors` / `.json` file."""
    directory = _directory(Path(path))
    try:
        config = json.loads((directory / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise L2MError(f"{directory} is not a memory adapter (no readable {CONFIG})") from exc
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise L2MError(f"{directory / CONFIG} is not an {FORMAT} v{VERSION} file")
    return config


def load_adapter(path: str | Path, model: PreTrainedModel,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> MemoryAugmentedModel:
    """Attach the adapter at `path` to `model`, refusing a model other than the one it was trained on."""
    directory = _directory(Path(path))
    config = read_adapter_config(directory)
    check_base(config["base"], model, f"memory adapter {directory}")
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise L2MError(f"cannot read {directory / WEIGHTS}: {str(exc).splitlines()[0]}") from exc
    param = next(model.parameters())
    memory = LM2Memory(MemoryConfig(**config["memory"]), device=param.device, dtype=param.dtype)
    lora_cfg = config.get("lora")
    lora = LoRA(model, lora_cfg["rank"], tuple(lora_cfg["targets"]), lora_cfg["alpha"]) if lora_cfg else None
    modules = {"memory": memory} | ({"lora": lora} if lora is not None else {})
    load_into(modules, tensors, directory / WEIGHTS)
    return MemoryAugmentedModel(model, memory, tokenizer, lora, config["question_template"], config["segment_len"])


def _directory(path: Path) -> Path:
    path = path.expanduser()
    if path.is_file() and path.name in (WEIGHTS, CONFIG):
        return path.parent
    if not path.is_dir():
        raise L2MError(f"memory adapter not found: {path}")
    return path
