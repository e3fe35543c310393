"""Instructions from the platform down to the machines: the durable store (store.py), the
mapping from an instruction to checked writes (plan.py) and the engine (engine.py)."""

from __future__ import annotations

from .engine import InstructionEngine

__all__ = ["InstructionEngine"]
