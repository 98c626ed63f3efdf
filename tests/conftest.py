"""Each test module leaves no Ray behind in the pytest process: a job's `main()` called in-process
starts a local Ray and (as in a notebook) leaves it up; the next module starts its own.

The fresh-venv install of cluster.yaml's setup commands starts in a thread as soon as the suite
collects its test, so its two minutes of pip run beside the first modules (test_cluster_yaml)."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _shutdown_ray_after_module():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def pytest_collection_finish(session) -> None:
    for item in session.items:  # what runs, after -k / deselection
        if item.name == "test_setup_commands_install_amray_into_a_fresh_venv":
            item.module.start_setup_early()
