"""LM2-style learned memory: a gated slot bank per decoder block, trained segment by segment (DESIGN §6; the tasks
and the trainer are in `l2m_core.training`)."""

from l2m_core.lm2.adapter import load_adapter, read_adapter_config, save_adapter
from l2m_core.lm2.attach import MemoryAugmentedModel, attach_memory
from l2m_core.lm2.memory import LM2Memory, MemoryConfig

__all__ = [
    "LM2Memory", "MemoryAugmentedModel", "MemoryConfig", "attach_memory", "load_adapter", "read_adapter_config",
    "save_adapter",
]
