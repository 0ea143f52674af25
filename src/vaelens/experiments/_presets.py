"""Named sweeps: the released protocol and the offline demo (docs/method.md section 7)."""

from __future__ import annotations

from typing import Any

# The authors' released protocol: 4 data sets x 2 models x 50 betas, 100 epochs, 3,072 test images.
PAPER: dict[str, Any] = {
    "datasets": ["mnist", "fashion-mnist", "cifar10", "celeba"],
    "models": ["mlp", "conv"],
    "betas": "logspace:-2:1:50",
    "epochs": 100,
    "n": 3072,
}

# The main job offline, in minutes on a laptop CPU: MLP VAEs on mnist-5k at beta 0.1, 1 and 4, and
# beta 1 with mixup.
DEMO: dict[str, Any] = {
    "datasets": ["mnist-5k"],
    "models": ["mlp"],
    "betas": [0.1, 1.0, 4.0],
    "mixup": "both",
    "mixup_betas": [1.0],
    "epochs": 10,
    "n": 500,
    "eps": [0.5, 1.0, 2.0],
}

PRESETS: dict[str, dict[str, Any]] = {"paper": PAPER, "demo": DEMO}
