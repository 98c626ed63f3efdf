"""What every job's command line shares, and where a job's outputs go.

    parser = job_parser(__doc__, Config, Config())          # --config --output-dir --print-config KEY=VALUE
    cfg = config_from_args(parser, parser.parse_args(argv), load_config)
    out = prepare_output_dir(cfg, "metrics.jsonl, summary.json")   # absolute; config.yaml written

`--help` lists every config key with its default, what it accepts and its docstring (generated from
the dataclass tree, `configtree.describe_tree`). `--print-config` prints the resolved tree as YAML
(a file `--config` takes back) and exits. log.output_dir comes back absolute: under `ray job
submit` a relative one would land in Ray's temporary copy of the working directory, so there it is
refused with the fix named.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from amray.configtree import ConfigError, describe_tree, to_yaml

CONFIG_FILE = "config.yaml"
"""The resolved config of a run, in its output directory (`--config OUTPUT_DIR/config.yaml` reruns it)."""


def job_parser(description: str, tree: type, base: object, default_config: str | None = None,
               output_help: str = "run directory (log.output_dir)") -> argparse.ArgumentParser:
    """A job's parser with the shared flags; its --help ends with every config key."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=keys_epilog(tree, base), allow_abbrev=False)
    add_config_arguments(parser, default_config, output_help)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser, default_config: str | None = None,
                         output_help: str = "run directory (log.output_dir)") -> None:
    parser.add_argument("--config", default=default_config, help="YAML config file" +
                        (f" (default: {default_config})" if default_config else ""))
    parser.add_argument("--output-dir", default=None, help=output_help)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (defaults <- --config <- overrides) as YAML and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides KEY=VALUE, e.g. trainer.lr=1e-6 (keys below)")


def keys_epilog(tree: type, base: object) -> str:
    return ("config keys: KEY = default (accepts), as KEY=VALUE overrides or as sections of --config YAML\n"
            + describe_tree(tree, base))


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     load: Callable[[str | None, list[str]], object]) -> object:
    """The config the flags name, with log.output_dir absolute; a bad key or value ends the command
    with the key named (exit 2); --print-config prints the tree and exits 0."""
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"log.output_dir={args.output_dir}")
    try:
        cfg = load(args.config, overrides)
        flag = "--output-dir" if args.output_dir else "log.output_dir"
        cfg.log.output_dir = str(output_path(cfg.log.output_dir, flag))
    except ConfigError as e:
        parser.error(str(e))
    if args.print_config:
        print(to_yaml(cfg), end="")
        raise SystemExit(0)
    return cfg


def ray_job_working_dir() -> str | None:
    """The working_dir `ray job submit` gave this driver, whose cwd is then Ray's temporary copy
    of it (None outside such a job)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray's job supervisor for the entrypoint
    if not raw:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    return runtime_env.get("working_dir") or None


def output_path(path: str | Path, flag: str) -> Path:
    """`path` made absolute against the cwd. Under `ray job submit --working-dir`, the cwd is Ray's
    temporary copy of the working dir, deleted with it and on the head node only: a relative
    output path there is refused, naming the flag and the fix."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if ray_job_working_dir():
        raise ConfigError(
            f"{flag} {path} is a relative path, and this job runs in Ray's temporary copy of its working "
            f"directory ({Path.cwd()}): what it writes there is deleted with that copy. Give an absolute path "
            f"on storage every node of the cluster mounts, e.g. {flag} /shared/runs/{p.name}")
    return Path(os.path.abspath(p))


def prepare_output_dir(cfg: object, driver_writes: str, learner_writes: str = "") -> Path:
    """Create log.output_dir, write the resolved config there (config.yaml), and say where every
    output goes: this driver writes `driver_writes` on this host; learner rank 0 writes
    `learner_writes` (the model) on whichever node it runs."""
    out = Path(cfg.log.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(to_yaml(cfg))
    print(f"outputs: {out} (on {socket.gethostname()}: {CONFIG_FILE}, {driver_writes})", flush=True)
    if learner_writes:
        print(f"outputs: {out / learner_writes} is written by learner rank 0 on its own node: on a multi-node "
              f"cluster give an output directory on storage every node mounts", flush=True)
    return out
