"""Shared fixtures. Ray in tests: loopback only, auth off, small object store, one Ray per module."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Loopback only: without this Ray (Linux) rewrites 127.0.0.1 to the outward address and listens on
# every interface. Read when Ray is imported, hence here, before any test module imports it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
# Ray Train V2 is the default in 2.60; say so explicitly so behaviour does not change under us.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray bound to 127.0.0.1 for the whole test module; shut down afterwards."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",  # never join a Ray that happens to run on this machine
        num_cpus=4,  # more logical CPUs than cores: Train workers and trials must fit (DESIGN.md §6)
        object_store_memory=200 * 1024**2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        namespace="facenas-tests",
    )
    yield ray
    ray.shutdown()
