"""Where breaker states live: memory (the default); Redis and PostgreSQL come next."""

from .memory import MemoryStorage

__all__ = ["MemoryStorage"]
