"""The L2M core: model loading, the KV memory engine with its tiers, and the LM2 learned memory.

Names are imported lazily so that `from l2m_core.errors import L2MError` does not load torch.
"""

from importlib import import_module

_EXPORTS = {"DEFAULT_MODEL": "l2m_core.loading", "LoadedModel": "l2m_core.loading", "load_model": "l2m_core.loading",
            "L2MError": "l2m_core.errors", "Memory": "l2m_core.memory", "MemorySettings": "l2m_core.settings",
            "Answer": "l2m_core.memory", "Citation": "l2m_core.memory", "BlockSpan": "l2m_core.store"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'l2m_core' has no attribute {name!r}")
