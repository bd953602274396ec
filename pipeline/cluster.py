"""Ray as an optional engine (``pip install -e ".[ray]"``): connect to a cluster, or start a
local runtime, and size a pool of model actors to what the cluster has.

The feature stage (:mod:`pipeline.features.ray_engine`) and batch scoring
(:mod:`pipeline.predict.ray_scoring`) both stream work through such a pool: each actor loads its
models once, on one GPU in bf16 when the cluster has GPUs, else on CPU threads in fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from pipeline.errors import DoubanError, InputError

log = logging.getLogger(__name__)


class RayNotInstalled(DoubanError):
    """``--engine ray`` without Ray installed."""

    hint = 'install the extra: pip install -e ".[ray]" (or pip install "ray[data]")'


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local runtime stays on 127.0.0.1


def require_ray(local: bool = False) -> ModuleType:
    """The ``ray`` module with Ray Data, or :class:`RayNotInstalled` saying how to get it.
    ``local``: this process will start its own runtime, which then binds the loopback address
    only (Ray otherwise advertises the machine's network address, for other nodes to join)."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # read when ray is imported; workers inherit it
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data]: pyarrow, pandas, fsspec)
    except ImportError as error:
        message = f"the ray engine needs Ray Data, which is not installed ({error})"
        raise RayNotInstalled(message) from error
    return ray


@contextlib.contextmanager
def ray_runtime(address: str | None = None) -> Iterator[ModuleType]:
    """Use the Ray runtime this process is already connected to, else connect to ``address``
    (``auto``: the cluster this machine belongs to; ``HOST:PORT``) or, with None, start a local
    one on this machine's cores; a runtime started here is shut down on exit."""
    ray = require_ray(local=address is None)
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,  # actor failures still come back as exceptions
            )
        except ConnectionError as error:
            raise InputError(
                f"cannot reach a Ray cluster at {address!r}: {error}",
                "start one with `ray start --head`, or leave --address out for a local runtime",
            ) from error
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is on stderr already
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def cause_of(error: BaseException) -> BaseException:
    """The user-fixable error (a :class:`DoubanError`) a Ray task or actor raised, else
    ``error`` itself: Ray wraps what its workers raise."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, DoubanError) else error


@dataclasses.dataclass(frozen=True)
class ActorPool:
    """How many model actors, and what each one holds: one GPU, or ``threads`` CPU cores."""

    actors: int
    device: str  # "cuda" or "cpu"
    threads: int  # torch intra-op threads per actor (CPU actors)
    cpus: float  # CPUs each actor reserves from Ray (CPU actors)

    def map_batches_args(self) -> dict[str, Any]:
        """Resource and pool arguments for ``Dataset.map_batches`` with a callable class."""
        ray = require_ray()
        gpu = self.device == "cuda"
        return {
            # one task at a time per actor: a shard is seconds of work, and queueing several on
            # one actor leaves the others idle at the end
            "compute": ray.data.ActorPoolStrategy(
                size=self.actors, max_tasks_in_flight_per_actor=1
            ),
            "num_cpus": 1 if gpu else self.cpus,
            "num_gpus": 1 if gpu else 0,
        }

    def describe(self) -> str:
        each = "1 GPU (bf16)" if self.device == "cuda" else f"{self.threads} CPU thread(s) (fp32)"
        return f"{self.actors} actor(s), each {each}"


def plan_actors(actors: int | None = None, device: str = "auto", spare_cpus: int = 0) -> ActorPool:
    """Size the pool to the connected cluster: GPU actors when it has GPUs (unless ``device`` is
    ``cpu``), else CPU actors sharing its cores; ``actors`` defaults to one per GPU or per core.

    ``spare_cpus`` stay unreserved for Ray Data's own tasks (a file read needs a whole CPU: with
    every core reserved by actors it never starts); the actors' threads still use every core.
    """
    ray = require_ray()
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(int(resources.get("CPU", 1)), 1)
    if actors is not None and actors < 1:
        raise InputError(f"--actors must be at least 1, got {actors}")
    if device == "cuda" and not gpus:
        raise InputError("device cuda was asked for but the Ray cluster has no GPU", "use cpu")
    if gpus and device != "cpu":
        wanted = actors or gpus
        if wanted > gpus:
            log.warning("%d actors asked for but the cluster has %d GPU(s)", wanted, gpus)
        return ActorPool(min(wanted, gpus), "cuda", 1, 1.0)
    wanted = actors or cpus
    if wanted > cpus:
        log.warning("%d actors asked for but the cluster has %d CPU(s)", wanted, cpus)
    count = min(wanted, cpus)
    reserved = max(cpus - spare_cpus, 0) / count
    return ActorPool(count, "cpu", cpus // count, reserved)
