"""torch's NVML-based CUDA check, which importing Lightning turns on, turned off where NVML cannot load.

Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when imported, so that torch.cuda.is_available() asks NVML (the
NVIDIA driver's management library) and does not initialise CUDA, after which forked processes could not use
it. Where NVML is missing (no NVIDIA driver: a CPU machine), torch tries to load it at every such call, fails,
and asks the CUDA runtime after all, as it does without the setting. Adam asks at every step (whether a CUDA
graph is being captured), and the failed loading cost ~0.6 ms there on this project's 2-core CPU VM: a tenth of
a small model's CPU training step (train.py, hidden 8: 6.17 -> 5.53 ms per step, medians of 5 interleaved runs).
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
