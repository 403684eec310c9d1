"""One local Ray for the whole test session (two local instances confuse Ray's cleanup), started
only by the tests that need it, and shut down at the end."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads in tests
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a local Ray with 2 CPUs and its dashboard (stopped trials need it)."""
    import ray

    from raysweep.run.sweep import connect

    connect(None, cpus=2, verbose=False)
    address = ray.get_runtime_context().gcs_address
    yield address
    ray.shutdown()
