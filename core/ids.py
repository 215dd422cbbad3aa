"""Time-ordered UUIDs (version 7, RFC 9562) for rows inserted at a high rate.

A random (version 4) key lands each insert on a random leaf of the primary-key
index, and of every index keyed by it (the ledger's `usage:<id>` idempotency
key and its usage_id): on a table of tens of millions of rows each insert then
dirties, and after every checkpoint writes in full to the WAL, a page of its
own. A version-7 id starts with the creation time in milliseconds, so new keys
go to the right-hand edge of those indexes, a few hot pages for a whole batch.
The remaining 74 bits are random, so ids stay unguessable and unique across
processes without coordination. The creation time an id reveals is no more
than the row's own `recorded_at`.
"""

from __future__ import annotations

import os
import time
import uuid

_RAND_A_BITS = 12
_RAND_B_BITS = 62


def uuid7() -> uuid.UUID:
    """A version-7 UUID: 48 bits of Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> (80 - _RAND_A_BITS)
    rand_b = rand & ((1 << _RAND_B_BITS) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)
