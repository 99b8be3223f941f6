"""torch's NVML-based CUDA check, which importing Lightning turns on, turned off where NVML cannot load.

Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so that torch.cuda.is_available() asks NVML (the NVIDIA driver's
library) instead of initialising CUDA, which forked processes could then not use. Without NVML torch tries to load
it at every such call, fails, and asks the CUDA runtime after all: on a CPU, at every Adam step (is a CUDA graph
being captured?), a noticeable share of a small model's step.
"""

from __future__ import annotations

import ctypes
import os

SETTING = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_the_nvml_check_without_nvml() -> None:
    """Unset Lightning's setting where NVML cannot load: torch's answers stay the same, without the failed load."""
    if os.environ.get(SETTING) != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")  # what torch loads (torch.cuda._raw_device_count_nvml)
    except OSError:
        del os.environ[SETTING]
