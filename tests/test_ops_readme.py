"""The README's cluster recipes keep the fixes of issue 17: a reader who follows them literally
does not meet the traps that tests/test_job_submit.py and tests/test_cluster_yaml.py reproduce."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def commands(text: str) -> list[str]:
    """Shell commands of the fenced bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_token_authentication_is_part_of_the_recipe() -> None:
    cmds = commands(README)
    assert any(c.startswith("export RAY_AUTH_MODE=token") for c in cmds)
    assert any("get-auth-token --generate" in c for c in cmds)


def test_a_local_heads_jobs_name_the_venvs_python() -> None:
    local = [c for c in commands(README) if "ray job submit" in c and "--address" not in c]
    assert local and all(re.search(r'-- "?\$PWD/\.venv/bin/python"? ', c) for c in local), local


def test_submitted_jobs_write_to_absolute_paths() -> None:
    for c in (c for c in commands(README) if "ray job submit" in c):
        for flag in ("--output-dir", "--output"):
            for path in re.findall(rf"{flag} (\S+)", c):
                assert path.strip('"').startswith(("/", "$PWD/")), (flag, path, c)


def test_the_cluster_file_is_checked_before_ray_up_and_gpu_installs_use_install_sh() -> None:
    cmds = commands(README)
    check = next(i for i, c in enumerate(cmds) if "-m amray.clusterfile cluster.yaml" in c)
    assert check < next(i for i, c in enumerate(cmds) if "ray up cluster.yaml" in c)
    assert any("./install.sh --gpu" in c for c in cmds)
    assert not any(re.search(r"pip install -e '?\.\[gpu", c) for c in cmds)  # flash-attn would build without torch
    assert "ray stop --force" not in README
