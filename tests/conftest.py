"""Each test module leaves no Ray behind in the pytest process: a job's `main()` called in-process
starts a local Ray and (as in a notebook) leaves it up; the next module starts its own."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _shutdown_ray_after_module():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
