"""The loop: one iteration (``iteration``), unattended iterations (``watch``), one per model (``lock``)."""

from .iteration import REUSED_PARAMS, LoopOptions, LoopResult, LoopStopped, Step, champion_params, run_iteration
from .lock import lock_path, model_lock
from .watch import (IterationOutcome, WatchEvent, Watcher, WatchOptions, WatchResult, parse_duration,
                    stop_on_signals)

__all__ = ["REUSED_PARAMS", "IterationOutcome", "LoopOptions", "LoopResult", "LoopStopped", "Step", "WatchEvent",
           "WatchOptions", "WatchResult", "Watcher", "champion_params", "lock_path", "model_lock",
           "parse_duration", "run_iteration", "stop_on_signals"]
