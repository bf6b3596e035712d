"""`imagine-bot bench` on the CPU with the tiny model (what CI runs), and the SDXL architecture it builds."""

from __future__ import annotations

import pytest
import torch

from bot.cli import main
from inference.bench import (
    BenchConfig,
    make_sdxl_random_pipeline,
    model_tflops_per_image,
    parse_batch_sizes,
    run_bench,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)


def test_bench_command_prints_both_variants(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps to the terminal width; keep every cell on one line
    code = main(["bench", "--device", "cpu", "--steps", "2", "--batch-sizes", "1,2", "--repeats", "1"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 4, lines
    assert sum("optimized" in row for row in rows) == 2
    assert sum("plain" in row for row in rows) == 2
    assert any("fuse_qkv, channels_last" in row for row in rows)
    assert all("n/a" in row for row in rows)  # no GPU memory, no MFU on the CPU
    assert "64²" in "\n".join(lines)


def test_bench_rows() -> None:
    result = run_bench(BenchConfig(device="cpu", batch_sizes=(2,), steps=2, repeats=1))
    assert [(row.variant, row.batch_size) for row in result.rows] == [("optimized", 2), ("plain", 2)]
    assert result.size == 64
    for row in result.rows:
        assert row.images_per_s > 0
        assert row.s_per_image == pytest.approx(1 / row.images_per_s)
        assert row.warm_up_s > 0
        assert row.peak_memory_gib is None
        assert row.mfu is None
    speedup = result.speedup(2)
    assert speedup is not None
    assert speedup > 0


def test_sdxl_random_is_refused_off_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", "sdxl-random", "--device", "cpu"]) == 2
    assert "CUDA" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--batch-sizes", "1,x"]) == 2


def test_sdxl_random_has_the_real_architecture() -> None:
    """Built on the meta device (no memory): the UNet has SDXL's 2,567,463,684 parameters."""
    pipe = make_sdxl_random_pipeline("meta")
    assert sum(parameter.numel() for parameter in pipe.unet.parameters()) == 2_567_463_684
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 1024
    assert pipe.unet.device == torch.device("meta")


def test_counted_work() -> None:
    assert model_tflops_per_image(1024, 30) == pytest.approx(13.52 * 30 + 10.47)
    assert model_tflops_per_image(512, 30) == pytest.approx((13.52 * 30 + 10.47) / 4)
    assert parse_batch_sizes("1, 2,4,8") == (1, 2, 4, 8)
    with pytest.raises(ValueError, match="positive"):
        parse_batch_sizes("0,2")
