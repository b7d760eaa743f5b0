"""Replicate's rate limits: 600 creates per minute, 3000 calls per minute for the rest.

A token bucket per (client key, kind): full at start, so short bursts pass, refilled
continuously. One dict lookup and a little arithmetic per request.
"""

import math
import time
from dataclasses import dataclass

CREATES_PER_MINUTE = 600
OTHERS_PER_MINUTE = 3000
# Distinct client keys remembered; the oldest is dropped beyond this.
MAX_KEYS = 10_000


@dataclass
class Bucket:
    per_minute: int
    tokens: float
    updated: float


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int
    reset: int  # seconds until the bucket has a token again (at least 1, as Replicate sends)
    retry_after: int  # seconds to wait when not allowed


_buckets: dict[tuple[str, str], Bucket] = {}


def take(key: str, kind: str, per_minute: int) -> Verdict:
    """Spend one request from `key`'s `kind` bucket; per_minute == 0 means unlimited."""
    if per_minute == 0:
        return Verdict(allowed=True, remaining=1_000_000, reset=1, retry_after=0)
    now = time.monotonic()
    bucket = _buckets.get((key, kind))
    if bucket is None or bucket.per_minute != per_minute:
        if len(_buckets) >= MAX_KEYS:
            _buckets.pop(next(iter(_buckets)))
        bucket = _buckets[(key, kind)] = Bucket(per_minute, float(per_minute), now)
    rate = per_minute / 60.0
    bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated) * rate)
    bucket.updated = now
    if bucket.tokens >= 1.0:
        bucket.tokens -= 1.0
        return Verdict(True, int(bucket.tokens), 1, 0)
    wait = math.ceil((1.0 - bucket.tokens) / rate)
    return Verdict(False, 0, wait, wait)
