"""Chat sessions persisted in the store's database, so a conversation resumes another day.

Each turn (the user's message, tool calls and their results, the answer) is a row of `agent_turns`;
its text is also written into memory as a document `session/<id>/<seq>` so later turns read it by
attention rather than by growing the prompt.
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa

metadata = sa.MetaData()
turns = sa.Table(
    "agent_turns", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("session", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),   # user | tool | assistant
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


class Session:
    def __init__(self, engine: sa.Engine, session_id: str):
        self.engine, self.id = engine, session_id
        with engine.connect() as conn:
            self.seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(turns.c.seq), 0))
                                    .where(turns.c.session == session_id)).scalar_one()

    @classmethod
    def open(cls, engine: sa.Engine, resume: bool = False, session_id: str | None = None) -> Session:
        """A new session, the one named, or (with `resume`) the most recent one."""
        metadata.create_all(engine)
        if session_id is None and resume:
            with engine.connect() as conn:
                session_id = conn.execute(sa.select(turns.c.session).order_by(turns.c.id.desc()).limit(1)).scalar()
        return cls(engine, session_id or uuid.uuid4().hex[:12])

    def add(self, role: str, content: str) -> str:
        """Record a turn; returns the memory source name it is written under."""
        self.seq += 1
        with self.engine.begin() as conn:
            conn.execute(turns.insert().values(session=self.id, seq=self.seq, role=role, content=content,
                                               created_at=time.time()))
        return f"session/{self.id}/{self.seq:04d}"

    def history(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(turns.c.role, turns.c.content).where(turns.c.session == self.id)
                                .order_by(turns.c.seq)).all()
        return [(r.role, r.content) for r in rows]
