"""LM2-style learned memory: a gated slot bank per decoder block, trained segment by segment (DESIGN §6)."""

from l2m_core.lm2.adapter import load_adapter, read_adapter_config, save_adapter
from l2m_core.lm2.attach import MemoryAugmentedModel, attach_memory
from l2m_core.lm2.memory import LM2Memory, MemoryConfig
from l2m_core.lm2.tasks import BabiTask, KeyValueRecall, make_task
from l2m_core.lm2.trainer import TrainConfig, Trainer

__all__ = [
    "BabiTask", "KeyValueRecall", "LM2Memory", "MemoryAugmentedModel", "MemoryConfig", "TrainConfig", "Trainer",
    "attach_memory", "load_adapter", "make_task", "read_adapter_config", "save_adapter",
]
