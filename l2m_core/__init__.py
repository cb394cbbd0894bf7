"""The L2M core: model loading, the KV memory engine with its tiers, and the LM2 learned memory."""

from l2m_core.errors import L2MError
from l2m_core.loading import DEFAULT_MODEL, LoadedModel, load_model

__all__ = ["DEFAULT_MODEL", "L2MError", "LoadedModel", "load_model"]
