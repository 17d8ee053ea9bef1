"""Sizing Ray Train workers so Ray Data's tasks can still be scheduled (the `make demo` hang on 2 CPUs)."""

from __future__ import annotations

import pytest

from ttp_ray.ray_utils import train_worker_cpus


@pytest.mark.parametrize(("cpus", "workers", "expected"), [
    (2, 2, 0.5),    # the 2-core machine: two workers share one CPU, one stays free for ListFiles/reads
    (6, 2, 1.0),    # room enough: the default 1 CPU each
    (64, 8, 1.0),
    (1, 2, 0.1),    # never zero (Ray would then pack unlimited workers on a node)
    (3, 4, 0.5),
])
def test_train_workers_leave_a_cpu_for_data_tasks(cpus, workers, expected) -> None:
    got = train_worker_cpus(workers, total_cpus=cpus)
    assert got == expected
    if cpus - workers * got >= 1 - 1e-9 or got == 0.1:
        return
    raise AssertionError(f"{workers} workers x {got} CPU leave no CPU free on {cpus}")


def test_reads_the_connected_cluster(ray_session) -> None:
    import ray

    total = ray.cluster_resources()["CPU"]  # the real session cluster (6 logical CPUs)
    assert train_worker_cpus(2) == train_worker_cpus(2, total_cpus=total) == 1.0
    assert train_worker_cpus(int(total)) == train_worker_cpus(int(total), total_cpus=total) < 1.0
