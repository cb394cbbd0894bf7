"""The agent: its loop, sessions, plans and edits, and LangChain components."""
