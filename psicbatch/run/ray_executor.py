"""Running the same decode and inference as Ray Data stages, on one machine or a cluster.

The input list becomes a Ray dataset; ``map_batches`` runs an actor pool whose actors each
hold one ``Worker`` (decoder + engine, ``num_gpus=1`` each on GPU clusters) and run one
batch per stage at once, overlapping decoding, inference and post-processing, and results
stream back in input order to the driver, which writes them with the same crash-safe
writer as local runs: same schema, same error rows, same ``--resume``. Files are read
inside the actors rather than with ``ray.data.read_binary_files``, because one unreadable
file would fail a Ray read task, losing the per-file error isolation.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from psicbatch.engines.spec import EngineSpec
from psicbatch.errors import PsicbatchError
from psicbatch.paths import path_bytes, path_from_bytes
from psicbatch.run.options import RunOptions
from psicbatch.run.output import KEY_COLUMN, PART_SCHEMA
from psicbatch.run.worker import STAGE_COUNT, Task, Worker

REACH_SECONDS = 5.0  # how long a cluster's head may take to accept a connection

# Rows as actors return them; the driver adds each input's key, as for local workers.
RAY_SCHEMA = PART_SCHEMA.remove(PART_SCHEMA.get_field_index(KEY_COLUMN))


def ray_results(
    tasks: list[Task],
    spec: EngineSpec,
    options: RunOptions,
    devices: list[str],
    address: str | None = None,
) -> Iterator[tuple[list[dict[str, Any]], dict[str, float]]]:
    try:
        import ray
    except ImportError:
        raise PsicbatchError("--executor ray needs Ray: pip install 'psicbatch[ray]'") from None
    if address is not None:  # answering, even where this process is connected already
        check_reachable(address)
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, ValueError) as error:  # no cluster there, or no address
            cluster = f"the Ray cluster at --address {address}" if address else "a local Ray"
            raise PsicbatchError(f"cannot connect to {cluster} ({error})") from None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    items = [
        {"input_index": i, "path_bytes": path_bytes(p)} for _, batch in tasks for i, p in batch
    ]
    if not items:
        return iter(())
    gpus = 1 if devices[0].startswith("cuda") else 0
    count = len(devices)

    class Inspector:
        """One decoder and engine per actor, created once and reused for every batch."""

        def __init__(self) -> None:
            device = "cuda:0" if gpus else "cpu"  # Ray assigns each actor its own GPU
            self.worker = Worker(spec, options, device, threads=None if gpus else 1)

        def __call__(self, batch: pa.Table) -> pa.Table:
            items = list(
                zip(
                    batch.column("input_index").to_pylist(),
                    map(path_from_bytes, batch.column("path_bytes").to_pylist()),
                    strict=True,
                )
            )
            return pa.Table.from_pylist(self.worker.rows(items), schema=RAY_SCHEMA)

    # One call per stage at once per actor (Worker.rows lets each stage take one batch at a
    # time), so decoding, inference and post-processing overlap as in local workers.
    pool = ray.data.ActorPoolStrategy(
        size=count, max_concurrent_calls_per_actor=STAGE_COUNT, enable_true_multi_threading=True
    )
    dataset = ray.data.from_items(items).map_batches(
        Inspector,
        batch_size=options.batch_size,
        batch_format="pyarrow",
        compute=pool,
        num_gpus=gpus,
        num_cpus=1,
    )
    # Stage times are not collected from Ray actors; Ray's own dashboard shows them.
    return (
        (batch.to_pylist(), {})
        for batch in dataset.iter_batches(batch_size=options.batch_size, batch_format="pyarrow")
    )


def check_reachable(address: str) -> None:
    """A cluster address (HOST:PORT) at which nothing answers, refused at once: Ray retries
    it for minutes inside native code, where Ctrl-C and SIGTERM cannot stop it. Other
    forms (``auto``, ``ray://``) are left to Ray."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "://" in address:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS):
            pass
    except OSError as error:
        raise PsicbatchError(
            f"cannot connect to the Ray cluster at --address {address} ({error.strerror or error})"
        ) from None
