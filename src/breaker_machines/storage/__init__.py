"""Where breaker states live: memory (the default), Redis, and the shared-storage protocol.

:class:`RedisStorage` needs the ``redis`` extra (``pip install 'breaker-machines[redis]'``);
importing it without redis-py installed works, opening it raises a ConfigError.
"""

from .memory import MemoryStorage
from .redis import RedisStorage
from .shared import Batch, Proposal, SharedRecord, SharedStorage, StorageError

__all__ = [
    "Batch",
    "MemoryStorage",
    "Proposal",
    "RedisStorage",
    "SharedRecord",
    "SharedStorage",
    "StorageError",
]
