"""The agent: its loop, sessions, plans and edits, and LangChain components.

`from agent import Agent` is the library entry point (see `agent.core`).
"""

from agent.core import Agent

__all__ = ["Agent"]
