"""Dask task runners for parallel studies: an existing cluster, one worker per GPU, or a
LocalCluster of single-threaded worker processes."""

from __future__ import annotations

import os

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # workers' INFO chatter off


def gpu_cluster(num_gpus: int, workers_per_gpu: int = 1):
    """A local Dask cluster with one worker process per GPU slot, each seeing only its GPU
    (CUDA_VISIBLE_DEVICES), so each loads its own model replica once."""
    from distributed import Nanny, Scheduler, SpecCluster

    from steertown.inference.sharding import gpu_worker_envs

    workers = {f"gpu-{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": env,
                                                      "host": "127.0.0.1"}}
               for i, env in enumerate(gpu_worker_envs(num_gpus, workers_per_gpu))}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, name="steertown-gpus")


def task_runner(workers: int = 2, address: str | None = None, gpus: int = 0):
    """DaskTaskRunner: an existing cluster (`address`), one worker per GPU, or a
    LocalCluster of `workers` single-threaded processes on 127.0.0.1."""
    import logging

    from prefect_dask import DaskTaskRunner

    # Nannies live in this process; at shutdown they warn about workers still flushing
    # Prefect logs ("still alive after 4.0 seconds, killing"), which is harmless.
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
    if address:
        return DaskTaskRunner(address=address)
    if gpus:
        return DaskTaskRunner(cluster_class=gpu_cluster, cluster_kwargs={"num_gpus": gpus})
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": workers, "threads_per_worker": 1, "processes": True,
        "host": "127.0.0.1", "dashboard_address": ":0"})
