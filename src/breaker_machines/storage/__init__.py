"""Where breaker states live: memory (the default), Redis, PostgreSQL, and the protocol
of storages shared between processes.

:class:`RedisStorage` needs the ``redis`` extra, :class:`PostgresStorage` the ``postgres``
extra (``pip install 'breaker-machines[redis,postgres]'``); importing them without their
driver installed works, opening them raises a ConfigError.
"""

from .memory import MemoryStorage
from .postgres import PostgresStorage
from .redis import RedisStorage
from .shared import (
    Batch,
    CorruptRecordError,
    Proposal,
    SharedRecord,
    SharedStorage,
    StorageError,
    StoredBreaker,
)

__all__ = [
    "Batch",
    "CorruptRecordError",
    "MemoryStorage",
    "PostgresStorage",
    "Proposal",
    "RedisStorage",
    "SharedRecord",
    "SharedStorage",
    "StorageError",
    "StoredBreaker",
]
