"""A trained reader: a LoRA on the frozen model's projections that acts while a question reads memory.

Stored blocks and the reading head were written by the base model and stay as they are; `Memory` attaches
the reader only around the forward passes of the question and the answer (`Memory.reader`), so the LoRA
shapes how the question's tokens read the blocks. Trained by `l2m train --task reader`
(training/reader.py). Saved as `reader.safetensors` + `reader.json` (shape, base model fingerprint, the
training recipe and its figures); loading it onto another model is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PreTrainedModel

from l2m_core.errors import L2MError
from l2m_core.lm2.adapter import load_into, named_parameters, save_tensors
from l2m_core.lm2.lora import LoRA
from l2m_core.loading import check_base, fingerprint, read_trained_config

FORMAT, VERSION = "l2m-reader", 1
WEIGHTS, CONFIG = "reader.safetensors", "reader.json"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


class Reader:
    """A LoRA plus the JSON it is saved with; `attach`/`detach` hook it onto the model it was built on."""

    def __init__(self, lora: LoRA, config: dict):
        self.lora, self.config = lora, config

    @classmethod
    def fresh(cls, model: PreTrainedModel, rank: int = 8, mlp: bool = False, alpha: float = 16.0,
              base_name: str = "") -> Reader:
        """An untrained reader (its LoRA's up-projections are zero, so it changes nothing yet)."""
        lora = LoRA(model, rank, ATTENTION + (MLP if mlp else ()), alpha)
        base = {"name": base_name, "fingerprint": fingerprint(model), "model_type": model.config.model_type}
        return cls(lora, {"format": FORMAT, "version": VERSION,
                          "lora": {"rank": rank, "targets": list(lora.targets), "alpha": alpha}, "base": base})

    def attach(self) -> None:
        self.lora.attach()

    def detach(self) -> None:
        self.lora.detach()

    def save(self, directory: str | Path, **record) -> Path:
        """Write the weights and the JSON (plus `record`: recipe, seed, steps, losses) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / WEIGHTS, named_parameters({"lora": self.lora}))
        self.config = {**self.config, **record}
        (directory / CONFIG).write_text(json.dumps(self.config, indent=2))
        return directory


def load_reader(path: str | Path, model: PreTrainedModel) -> Reader:
    """The reader saved at `path` (its directory or one of its two files), for `model` only."""
    directory, config = read_trained_config(path, WEIGHTS, CONFIG, FORMAT, VERSION, "reader", "reader")
    check_base(config.get("base", {}), model, f"reader {directory}")
    shape = config["lora"]
    lora = LoRA(model, shape["rank"], tuple(shape["targets"]), shape["alpha"])
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise L2MError(f"cannot read {directory / WEIGHTS}: {str(exc).splitlines()[0]}") from exc
    load_into({"lora": lora}, tensors, directory / WEIGHTS)
    lora.requires_grad_(False)
    return Reader(lora, config)
