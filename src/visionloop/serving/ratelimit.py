"""A token bucket per client (``--feedback-rate N/min``), bounded in memory.

Each client may burst up to N requests, then gets one more every ``60/N`` seconds. The table of
clients is an LRU of at most ``max_clients`` entries: a flood of new addresses evicts the
least recently seen ones (whose buckets would have refilled anyway) instead of growing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
          "d": 86400.0, "day": 86400.0}


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: float

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


def parse_rate(value: str) -> Rate:
    """``"30/min"`` → 30 per minute (burst 30); ``"0"`` or ``"off"`` → no limit. Units: s, min, h, d."""
    text = value.strip().lower()
    if text in ("0", "off", "none", ""):
        return Rate(0.0, 0.0)
    count, _, unit = text.partition("/")
    try:
        n = float(count)
    except ValueError:
        n = -1.0
    if n <= 0 or unit.strip() not in _UNITS:
        raise ValueError(f"rate {value!r}: use N/s, N/min, N/h or N/d with N > 0 (or 0 for no limit)")
    return Rate(n / _UNITS[unit.strip()], n)


class RateLimiter:
    """``check(client)``: 0 when allowed (a token is taken), else the seconds to wait."""

    def __init__(self, rate: Rate, max_clients: int = 10000, clock=time.monotonic):
        self.rate = rate
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def check(self, client: str) -> float:
        if not self.rate.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.rate.burst, now))
            tokens = min(self.rate.burst, tokens + (now - at) * self.rate.per_second)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate.per_second
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
