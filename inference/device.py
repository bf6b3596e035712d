"""Pick the accelerator and the number format the pipeline runs in."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cuda", "cuda:N", "mps", "cpu")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())


def choose_device(requested: str) -> str:
    """`auto` → the best device present (cuda, then mps, then cpu); an explicit one must exist."""
    value = requested.strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not _mps_available():
            raise ValueError("Device 'mps' was requested but Apple's Metal backend is not available here.")
        return "mps"
    if value == "cuda" or value.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"Device {requested!r} was requested but CUDA is not available here.")
        if value == "cuda":
            return value
        index_text = value.removeprefix("cuda:")
        if not index_text.isdigit():
            raise ValueError(f"Device {requested!r} is not valid: use cuda or cuda:N with N a GPU index.")
        count = torch.cuda.device_count()
        if int(index_text) >= count:
            raise ValueError(f"Device {requested!r} was requested but only {count} CUDA device(s) exist.")
        return value
    raise ValueError(f"Unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}.")


def choose_dtype(requested: str, device: str) -> torch.dtype:
    """`auto` → bfloat16 on CUDA when the GPU supports it, else float16 on a GPU, float32 on the CPU."""
    value = requested.strip().lower()
    kind = device.split(":", 1)[0]
    if value == "auto":
        if kind == "cuda":
            # bf16 has fp32's range, so nothing overflows; fp16 is the fallback for pre-Ampere cards.
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if kind == "mps":
            return torch.float16
        return torch.float32
    if value not in DTYPES:
        raise ValueError(f"Unknown dtype {requested!r}; choose one of auto, {', '.join(DTYPES)}.")
    if value == "float16" and kind == "cpu":
        # CPU kernels for half precision are missing or very slow, and the SDXL VAE overflows in fp16.
        raise ValueError("dtype float16 is not supported on the CPU; use float32 (or bfloat16).")
    return DTYPES[value]
