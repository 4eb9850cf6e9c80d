"""One mesh helper for training, TIS and generation: data parallel over every device of every
process, parameters replicated, batches split on the `data` axis. No pmap.

`maybe_initialize_distributed()` starts `jax.distributed` when a multi-host environment is
declared (TPU pods and SLURM are detected by JAX itself; or COORDINATOR_ADDRESS, NUM_PROCESSES,
PROCESS_ID for a hand-made cluster), and does nothing for a single process.

Losing a process. When one process of a multi-process run dies (SIGKILL, a lost VM), the others
do not hang: jax.distributed ends them (SIGABRT, "the JAX distributed service detected fatal
errors") at once when process 0 (the coordinator) died, and otherwise within the coordination
service's heartbeat timeout (`jax.distributed.initialize(heartbeat_timeout_seconds=…)`, JAX's
default 100 s); a collective the dead process was part of fails sooner (gloo: "Connection closed
by peer"). Every step writes atomically and resumes, so rerunning all processes continues.

SIGTERM (a preempted VM's notice). With several processes, JAX's preemption service (on by
default: `jax_enable_preemption_service`) takes SIGTERM in its own handler and tells every
process; `preemption_agreed(step)` is then True at one step, the same in every process, so all
stop together (`errors.stop_requests` leaves SIGTERM to that handler: replacing it would lose the
notice).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed() -> bool:
    """Initialises jax.distributed if the environment asks for several processes."""
    if os.environ.get("COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=os.environ["COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["NUM_PROCESSES"]),
            process_id=int(os.environ["PROCESS_ID"]),
        )
        return True
    if os.environ.get("SLURM_NTASKS", "1") != "1" or os.environ.get("TPU_WORKER_HOSTNAMES"):
        jax.distributed.initialize()  # JAX reads the cluster from the environment
        return True
    return False


_calls = itertools.count()  # preemption_agreed() calls without a step, in this process


def preemption_agreed(step: int | None = None) -> bool:
    """True at the step every process agreed to stop at after any of them got SIGTERM: one more
    than the furthest step any process had passed here when the notice came (JAX's
    `multihost_utils.reached_preemption_sync_point`). False in a single process (there SIGTERM
    is `errors.stop_requests`'s) and when JAX's preemption service is off.

    `step`: the step of a loop that every process runs in step from the same first step
    (training). None: this process's own count of its calls without one, for loops that every
    process runs through the same calls in the same order but not in step, such as the shard
    loops of generation and TIS (each process visits every shard index, skipping the others'
    shards): the count goes on from one loop to the next, so processes in different loops (one
    split ahead) still meet at one call."""
    if jax.process_count() == 1:
        return False
    from jax.experimental import multihost_utils

    if step is None:
        step = next(_calls)
    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # jax_enable_preemption_service is off
        return False


def data_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(mesh: Mesh, local: Any) -> Any:
    """This process's rows of a batch (a pytree of numpy arrays) → global jax.Arrays."""
    sharding = batch_sharded(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
    )


def check_batch_divides(global_batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(
            f"global batch {global_batch_size} does not split over {n} devices; use a multiple "
            f"of {n}"
        )


def split_over_local_devices(*rows: Any) -> tuple[int, list[jax.Array]]:
    """Pads batch-major arrays (repeating the last row) to a multiple of the local devices and
    places them split over those devices; returns (original batch, arrays). Jitted functions
    then run data-parallel on this host with no other change."""
    devices = jax.local_devices()
    b = int(np.shape(rows[0])[0])
    pad = (-b) % len(devices)
    spec = NamedSharding(Mesh(np.asarray(devices), (DATA_AXIS,)), PartitionSpec(DATA_AXIS))
    out = [
        jax.device_put(np.concatenate([np.asarray(r), np.repeat(np.asarray(r)[-1:], pad, 0)]), spec)
        for r in rows
    ]
    return b, out
