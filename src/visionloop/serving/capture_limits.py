"""Production bounds on what the server captures: caps per window and quotas per predicted class.

``--capture-rate`` thins the stream at random; these bound it, so that a burst of bad frames (a
camera pointed at a wall) cannot fill a day's labeling budget in a minute, and one frequent class
cannot crowd out the rare ones: ``--capture-caps 20/min,300/h,2000/d`` and
``--capture-class-quota 200/d``. Counts are sliding windows kept in memory per model (a restart
starts them afresh); a capture refused here is counted in ``visionloop_captures_dropped_total``.
Human flags (``/v1/feedback``) are not capped here: they have their own rate limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .ratelimit import parse_rate


@dataclass(frozen=True)
class Window:
    limit: int
    seconds: float


def parse_windows(value: str, flag: str) -> tuple[Window, ...]:
    """``"20/min,300/h"`` → windows; ``"off"`` (or ``0``) → none."""
    windows = []
    for part in (p for p in value.split(",") if p.strip()):
        try:
            rate = parse_rate(part)
        except ValueError as exc:
            raise ValueError(f"{flag} {value!r}: {exc}") from None
        if rate.enabled:
            if rate.burst != int(rate.burst):
                raise ValueError(f"{flag} {value!r}: counts are whole numbers")
            windows.append(Window(int(rate.burst), rate.burst / rate.per_second))
    return tuple(windows)


class CaptureLimits:
    """``admit(model, classes)``: None when one more capture fits every window (it is counted),
    else the reason it does not: ``capture_cap`` or ``class_quota``."""

    def __init__(self, caps: Sequence[Window] = (), class_quota: Sequence[Window] = (), clock=time.monotonic):
        self.caps, self.class_quota = tuple(caps), tuple(class_quota)
        self._clock = clock
        self._seen: dict[tuple, deque[float]] = {}  # (model, window index[, class]) -> times, at most limit long
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.caps or self.class_quota)

    def _full(self, key: tuple, window: Window, now: float) -> bool:
        times = self._seen.setdefault(key, deque())
        while times and now - times[0] >= window.seconds:
            times.popleft()
        return len(times) >= window.limit

    def admit(self, model: str, classes: Sequence[int]) -> str | None:
        if not self.enabled:
            return None
        now = self._clock()
        wanted = sorted(set(int(c) for c in classes))
        with self._lock:
            caps = [((model, i), w) for i, w in enumerate(self.caps)]
            quotas = [((model, i, c), w) for c in wanted for i, w in enumerate(self.class_quota)]
            if any(self._full(k, w, now) for k, w in caps):
                return "capture_cap"
            if any(self._full(k, w, now) for k, w in quotas):
                return "class_quota"
            for key, _ in caps + quotas:
                self._seen[key].append(now)
        return None
