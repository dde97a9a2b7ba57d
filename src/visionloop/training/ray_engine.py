"""``visionloop train --engine ray``: the same pipeline, run as one Ray task.

Without ``RAY_ADDRESS`` a local Ray is started for the command; with it the task goes to that
cluster. The worker reads the dataset from the store and logs to the tracking server, so with
a cluster both must be reachable from other machines: a local-path store or a SQLite tracking
URI is refused before anything is submitted. Resources come from the flags (``--device 0``:
one GPU; ``--cpus N``). The worker's progress comes back through a Ray queue and is replayed
on the caller's :class:`~.events.PipelineEvents` (the CLI's step lines and epoch bar); its
stdout and stderr reach the caller through Ray's log forwarding. Ctrl-C cancels the task:
the pipeline in the worker sees KeyboardInterrupt and marks the MLflow run KILLED.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError, VisionloopError
from ..settings import Settings, get_settings

if TYPE_CHECKING:
    from .config import TrainConfig
    from .events import PipelineEvents, StepRecord
    from .pipeline import PipelineResult
    from .trainer import EpochMetrics

# Stores and tracking servers another machine can reach (fsspec protocols, MLflow schemes).
SHARED_STORES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://")
SHARED_TRACKING = ("http://", "https://", "databricks")
# Passed to the worker when set here: credentials and endpoints for the store and the server.
WORKER_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
              "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
              "MLFLOW_TRACKING_TOKEN", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
              "YOLO_OFFLINE", "YOLO_CONFIG_DIR")
CANCEL_WAIT_S = 30.0  # after Ctrl-C: time for the worker to mark its run KILLED
RECANCEL_S = 3.0  # ... asking again this often
BATCH_EVERY_S = 0.5  # the worker forwards a batch tick at most this often
DONE = "done"  # the worker's last word on the queue
RUN_LINE = "MLflow run "  # how the pipeline announces its run (pipeline.Pipeline._start_run)


@dataclass(frozen=True)
class Cluster:
    address: str | None  # None: a local Ray started for this command

    @property
    def remote(self) -> bool:
        return self.address is not None

    def describe(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "a local Ray"


def cluster_from_env() -> Cluster:
    address = os.environ.get("RAY_ADDRESS", "").strip()
    return Cluster(None if address in ("", "local") else address)


def check_reachable(settings: Settings, cluster: Cluster) -> None:
    """A cluster's workers cannot read this machine's files: refuse before submitting."""
    if not cluster.remote:
        return
    store, uri = settings.resolved_store_url, settings.resolved_tracking_uri
    if not store.startswith(SHARED_STORES):
        raise ValidationError(f"RAY_ADDRESS={cluster.address}: the store {store} is a path on this machine, which the "
                              "cluster's workers cannot read; set VISIONLOOP_STORE_URL=s3://BUCKET/PREFIX "
                              "(nothing was submitted)")
    if not uri.startswith(SHARED_TRACKING):
        raise ValidationError(f"RAY_ADDRESS={cluster.address}: the tracking URI {uri} is local to this machine; "
                              "set MLFLOW_TRACKING_URI=http://HOST:PORT (an mlflow server) (nothing was submitted)")


def worker_env(settings: Settings, cluster: Cluster) -> dict[str, str]:
    """What a worker needs to find the store and the tracking server (a local Ray shares the home)."""
    env = {k: os.environ[k] for k in WORKER_ENV if os.environ.get(k)}
    env.update(VISIONLOOP_STORE_URL=settings.resolved_store_url, VISIONLOOP_TRACKING_URI=settings.resolved_tracking_uri,
               YOLO_OFFLINE=env.get("YOLO_OFFLINE", "1"))
    if not cluster.remote:
        env["VISIONLOOP_HOME"] = str(settings.resolved_home)
    return env


@contextmanager
def ray_session(cluster: Cluster, env: dict[str, str], num_cpus: int | None = None) -> Iterator[None]:
    """``ray.init`` for this command; shuts down only a Ray it started itself."""
    import ray

    if ray.is_initialized():  # a caller's session (a notebook, a sweep): use it as it is
        yield
        return
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": env}, include_dashboard=False,
                 log_to_driver=True, logging_level="ERROR", configure_logging=True,
                 **({"num_cpus": num_cpus} if num_cpus and not cluster.remote else {}))
    except ConnectionError as exc:
        raise VisionloopError(f"cannot reach {cluster.describe()}: {str(exc).splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()


class QueueEvents:
    """The worker's side: every event goes into a Ray queue for the caller to replay."""

    def __init__(self, queue: Any):
        self.queue = queue
        self._last_batch = 0.0

    def _put(self, name: str, *args: Any) -> None:
        # Fire and forget on the queue's actor (calls from one caller stay in order): a blocking
        # put would wait in ray.get, where a cancel's KeyboardInterrupt turns into an error that
        # progress reporting must not swallow.
        try:
            self.queue.actor.put_nowait.remote((name, args))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - progress must never fail the training it reports
            if type(exc).__name__ == "TaskCancelledError":
                raise KeyboardInterrupt from None

    def step_started(self, name: str, cached: bool) -> None:
        self._put("step_started", name, cached)

    def step_done(self, rec: StepRecord) -> None:
        self._put("step_done", rec)

    def step_failed(self, name: str) -> None:
        self._put("step_failed", name)

    def train_started(self, epochs: int) -> None:
        self._put("train_started", epochs)

    def epoch(self, em: EpochMetrics) -> None:
        self._put("epoch", em)

    def batch(self, epoch: int, batch: int, batches: int) -> None:
        now = time.monotonic()
        if now - self._last_batch >= BATCH_EVERY_S or batch == batches:
            self._last_batch = now
            self._put("batch", epoch, batch, batches)

    def message(self, text: str) -> None:
        self._put("message", text)


def _run_in_worker(cfg_json: str, queue: Any) -> PipelineResult:
    """The Ray task: the local pipeline in the worker, with the settings its environment gives."""
    from .config import TrainConfig
    from .pipeline import run_pipeline

    get_settings(fresh=True)  # a reused worker process: read this task's environment again
    cfg = TrainConfig.model_validate_json(cfg_json).model_copy(update={"engine": "local"})
    events = QueueEvents(queue)
    try:
        return run_pipeline(cfg, events)
    finally:  # after the run is ended (FINISHED, FAILED or KILLED): the caller may stop waiting
        events._put(DONE)


class _Replay:
    """Replays what the worker sent on the caller's events; remembers whether it started and ended."""

    def __init__(self, queue: Any, events: PipelineEvents):
        self.queue, self.events = queue, events
        self.heard = self.done = False
        self.run_id: str | None = None  # the worker's MLflow run, from its "MLflow run ID (...)" line

    def __call__(self) -> bool:
        while not self.done and not self.queue.empty():
            try:
                name, args = self.queue.get_nowait()
            except Exception:  # noqa: BLE001 - empty between the check and the get
                break
            self.heard = True
            if name == DONE:
                self.done = True
                continue
            if name == "message" and args and str(args[0]).startswith(RUN_LINE):
                self.run_id = str(args[0])[len(RUN_LINE):].split(" ", 1)[0]
            getattr(self.events, name)(*args)
        return self.done


def _cancel(ray: Any, ref: Any, replay: _Replay) -> None:
    """Cancel the task and wait for the worker's own "done" (its run ended KILLED) before this
    command shuts Ray down, which would kill the worker mid-update. A KeyboardInterrupt that
    lands inside library code can be swallowed there (an import's bare ``except``), so the
    cancel is repeated; a worker that still has not ended is killed and its run marked KILLED
    from here. A task that never started (still queued) sends nothing: the resolved ref is enough."""
    deadline = time.monotonic() + CANCEL_WAIT_S
    next_cancel = 0.0
    while not replay() and time.monotonic() < deadline:
        if not replay.heard and ray.wait([ref], timeout=0)[0]:
            time.sleep(1.0)  # a worker just starting gets a moment to be heard
            if not replay() and not replay.heard:
                return
        if time.monotonic() >= next_cancel:
            ray.cancel(ref)
            next_cancel = time.monotonic() + RECANCEL_S
        time.sleep(0.25)
    if not replay.done:
        ray.cancel(ref, force=True)
        if replay.run_id:
            from .. import registry

            client = registry.client()
            client.set_tag(replay.run_id, "visionloop.error", "interrupted (Ctrl-C); the Ray worker was killed")
            client.set_terminated(replay.run_id, "KILLED")


def _resources(cfg: TrainConfig) -> dict[str, float]:
    gpu = cfg.device not in ("cpu", "auto", "mps")
    return {"num_cpus": float(cfg.cpus or 1), "num_gpus": float(len(cfg.device.split(","))) if gpu else 0.0}


def _check_capacity(need: dict[str, float], cluster: Cluster) -> None:
    import ray

    have = ray.cluster_resources()
    for key, ray_key, what in (("num_gpus", "GPU", "GPU"), ("num_cpus", "CPU", "CPU")):
        if need[key] > have.get(ray_key, 0.0):
            raise ValidationError(f"{cluster.describe()} has {have.get(ray_key, 0.0):g} {what}(s); the training asks "
                                  f"for {need[key]:g} (--device / --cpus) (nothing was submitted)")


def _cause(exc: BaseException) -> BaseException:
    """The worker's own exception out of Ray's wrapper."""
    return getattr(exc, "cause", None) or exc


def run_on_ray(cfg: TrainConfig, events: PipelineEvents) -> PipelineResult:
    """Submit the pipeline as one Ray task, replay its progress here, return its result."""
    try:
        import ray
        from ray.exceptions import RayTaskError, TaskCancelledError
        from ray.util.queue import Queue
    except ImportError:
        raise VisionloopError("--engine ray needs Ray: pip install 'visionloop[ray]'") from None

    from .trainer import check_model_source

    settings = get_settings()
    cluster = cluster_from_env()
    check_reachable(settings, cluster)
    check_model_source(cfg.model)
    need = _resources(cfg)
    with ray_session(cluster, worker_env(settings, cluster)):
        _check_capacity(need, cluster)
        queue = Queue()  # unbounded: the worker never waits on it
        task = ray.remote(max_retries=0)(_run_in_worker).options(**need)
        ref = task.remote(cfg.model_dump_json(), queue)
        replay = _Replay(queue, events)
        events.message(f"submitted to {cluster.describe()} ({need['num_cpus']:g} CPU, {need['num_gpus']:g} GPU)")
        try:
            while not ray.wait([ref], timeout=0.25)[0]:
                replay()
            replay()
            return ray.get(ref)
        except KeyboardInterrupt:
            _cancel(ray, ref, replay)
            events.message("cancelled the Ray task")
            raise
        except TaskCancelledError:
            raise KeyboardInterrupt from None
        except RayTaskError as exc:
            cause = _cause(exc)
            if isinstance(cause, VisionloopError):
                raise cause from None
            raise VisionloopError(f"the Ray task failed: {type(cause).__name__}: {str(cause).splitlines()[0]}") from None
