"""`imagine-bot bench` on the CPU with the tiny model (what CI runs), and the SDXL architecture it builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bot.domain.batch_profile import BatchProfile
from bot.entrypoints.cli import main
from bot.runtime.settings import load_settings
from inference.bench import (
    BenchConfig,
    bench_sizes,
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
    assert result.sizes == ((64, 64),)
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
    assert model_tflops_per_image(1024, 1024, 30) == pytest.approx(13.52 * 30 + 10.47)
    assert model_tflops_per_image(512, 512, 30) == pytest.approx((13.52 * 30 + 10.47) / 4)
    assert model_tflops_per_image(2048, 512, 30) == pytest.approx(13.52 * 30 + 10.47)
    assert parse_batch_sizes("1, 2,4,8") == (1, 2, 4, 8)
    with pytest.raises(ValueError, match="positive"):
        parse_batch_sizes("0,2")


def test_bench_writes_a_profile_the_bot_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sizes, two batch sizes, 1 step, optimized only: the file records them, and BATCH_PROFILE reads
    it back as one budget per size."""
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "profiles" / "cpu.json"
    code = main(
        [
            "bench", "--device", "cpu", "--steps", "1", "--batch-sizes", "1,2", "--repeats", "1",
            "--buckets", "64x64,80x48", "--no-plain", "--profile-out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith("│")]
    assert len(rows) == 4
    assert not any("plain" in row for row in rows)
    assert "Wrote the batch profile" in captured.err
    data = json.loads(out.read_text())
    assert (data["device"], data["model"], data["steps"], data["dtype"]) == ("cpu", "tiny", 1, "float32")
    assert data["optimizations"] == "fuse_qkv, channels_last"
    assert [(b["width"], b["height"], sorted(b["images_per_s"])) for b in data["buckets"]] == [
        (64, 64, ["1", "2"]),
        (80, 48, ["1", "2"]),
    ]
    profile = BatchProfile.from_json(out.read_text())
    assert all(rate > 0 for bucket in profile.buckets for rate in bucket.images_per_s.values())
    budgets = load_settings(_env_file=None, batch_profile=out).batching().size_budgets
    assert set(budgets) == {(64, 64), (80, 48)}
    assert set(budgets.values()) <= {1, 2}


def test_bench_sizes() -> None:
    """Native square by default; --size; a WxH list; `all`: every bucket and upscale double; bad lists."""
    assert bench_sizes(BenchConfig(), 1024) == ((1024, 1024),)
    assert bench_sizes(BenchConfig(size=512), 1024) == ((512, 512),)
    assert bench_sizes(BenchConfig(buckets="1344x768,1024x1024"), 1024) == ((1344, 768), (1024, 1024))
    every = bench_sizes(BenchConfig(buckets="all"), 1024)
    assert len(every) == 18
    assert (2048, 2048) in every
    with pytest.raises(ValueError, match="not a size"):
        run_bench(BenchConfig(device="cpu", buckets="64"))
    with pytest.raises(ValueError, match="not both"):
        run_bench(BenchConfig(device="cpu", buckets="64x64", size=64))
