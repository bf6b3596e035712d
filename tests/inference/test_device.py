"""Device and dtype selection."""

from __future__ import annotations

import pytest
import torch

from inference import device as device_module
from inference.device import choose_device, choose_dtype


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


@pytest.mark.usefixtures("no_accelerator")
def test_auto_device_falls_back_to_cpu() -> None:
    """Without CUDA or MPS, auto picks the CPU; cpu is always accepted."""
    assert choose_device("auto") == "cpu"
    assert choose_device(" CPU ") == "cpu"


@pytest.mark.usefixtures("no_accelerator")
@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ("cuda", "not available"),
        ("cuda:0", "not available"),
        ("mps", "not available"),
        ("tpu", "Unknown device"),
    ],
)
def test_unavailable_or_unknown_device_is_rejected(requested: str, message: str) -> None:
    """Asking for a device that is missing (or does not exist) fails with a message that says so."""
    with pytest.raises(ValueError, match=message):
        choose_device(requested)


def test_auto_device_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA wins over MPS; a CUDA index beyond the devices present is refused."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert choose_device("auto") == "cuda"
    assert choose_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="only 1 CUDA"):
        choose_device("cuda:1")
    with pytest.raises(ValueError, match="cuda:N"):
        choose_device("cuda:x")


def test_cpu_dtypes() -> None:
    """The CPU runs float32 by default, accepts bfloat16, and refuses float16."""
    assert choose_dtype("auto", "cpu") is torch.float32
    assert choose_dtype("bfloat16", "cpu") is torch.bfloat16
    assert choose_dtype("float32", "cpu") is torch.float32
    with pytest.raises(ValueError, match="float16 is not supported on the CPU"):
        choose_dtype("float16", "cpu")
    with pytest.raises(ValueError, match="Unknown dtype"):
        choose_dtype("float64", "cpu")


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_auto_dtype(monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: torch.dtype) -> None:
    """On CUDA, auto is bfloat16 where the GPU supports it, else float16."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    assert choose_dtype("auto", "cuda:0") is expected
    assert choose_dtype("float16", "cuda") is torch.float16
