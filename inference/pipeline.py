"""The diffusers SDXL backend: renders a `RenderBatch` in one pipeline call.

txt2img, variations (img2img) and 2× upscales (img2img at a low strength) share one set of SDXL weights;
fast batches use a second pipeline built around the few-step UNet (inference/fast.py). Each image has its
own seeded generator, so it never depends on its batch-mates. Why it is built so: docs/design-notes.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import diffusers as _diffusers
import torch
from PIL import Image

from bot.domain.errors import BackendOutOfMemory, GenerationInterrupted
from bot.domain.jobs import BatchKey, ModelKind, RenderMode
from bot.domain.params import GenerationLimits
from bot.domain.render import ImageTask, RenderBatch, StepCallback
from inference.device import choose_device, choose_dtype
from inference.fast import FAST_SCHEDULERS, load_fast_unet, make_fast_scheduler
from inference.optimize import Optimizations, apply, apply_to_unet
from inference.quiet import quiet_model_libraries

log = logging.getLogger(__name__)

# Under mypy, diffusers' lazy exports resolve to its placeholder classes (no attributes, untyped calls), so
# the library is used untyped: pipelines are `Any` at this boundary and everything we return is typed.
diffusers: Any = _diffusers

SDXL_NATIVE_RESOLUTION = 1024
_LIMITS = GenerationLimits()
# Used when a job leaves the strength unset; the same defaults the domain offers.
DEFAULT_STRENGTH: dict[RenderMode, float] = {
    RenderMode.IMG2IMG: _LIMITS.variation_strength,
    RenderMode.UPSCALE: _LIMITS.upscale_strength,
}


def _dtype_kwarg() -> str:
    # diffusers 0.42 renamed `torch_dtype` to `dtype` (the old name warns); older releases know only the old.
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _oom_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [torch.cuda.OutOfMemoryError]
    generic = getattr(torch, "OutOfMemoryError", None)  # torch >= 2.5; also raised by other accelerators
    if isinstance(generic, type) and issubclass(generic, BaseException):
        errors.append(generic)
    return tuple(errors)


_OOM_ERRORS = _oom_errors()


class _EmptyFp32ListFilter(logging.Filter):
    """Drops diffusers' warning about keeping `[]` modules in float32: it fires on every dtype cast of the VAE
    (each fp16 upcast) although no module is concerned."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_EmptyFp32ListFilter())


# diffusers' callback_on_step_end(pipe, step_index, timestep, tensors) -> tensors
StepEndCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


class _Stop(Exception):
    """Raised inside the step callback to leave the pipeline at once."""


def native_resolution_of_folder(model: str) -> int | None:
    """unet sample_size × VAE scale factor, read from a local diffusers folder; None when not readable."""
    folder = Path(model)
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        sample_size = int(unet["sample_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        scale = 1 << (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        scale = 8  # every SDXL VAE
    return sample_size * scale


def img2img_schedule_steps(steps: int, strength: float) -> int:
    """The schedule length to ask for so that at least one step runs.

    diffusers runs int(steps × strength) steps of a `steps`-long schedule and refuses zero; a 1-step
    variation at strength 0.6 would fail, so the schedule is lengthened just enough to run one step.
    """
    scheduled = steps
    while int(scheduled * strength) < 1:
        scheduled += 1
    return scheduled


class DiffusersBackend:
    """SDXL through diffusers; `model` is a hub id or a local diffusers folder, loaded the same way.

    `fast_model` (optional) is the few-step UNet or LoRA for fast jobs, in any form inference/fast.py
    takes; `fast_scheduler` the scheduler it was distilled for.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        vae: str | None = None,
        fast_model: str | None = None,
        fast_scheduler: str = "euler",
        optimizations: Optimizations | None = None,
    ) -> None:
        if fast_scheduler not in FAST_SCHEDULERS:
            raise ValueError(
                f"Unknown FAST_SCHEDULER {fast_scheduler!r}; choose one of {', '.join(FAST_SCHEDULERS)}."
            )
        self.model = model
        self.vae_id = vae
        self.fast_model = fast_model or None
        self.fast_scheduler = fast_scheduler
        # Resolved now so a bad setting fails at start-up, not in the worker thread.
        self.device = choose_device(device)
        self.dtype = choose_dtype(dtype, self.device)
        self.optimizations = optimizations or Optimizations.default_for(self.device)
        self._txt2img: Any = None  # StableDiffusionXLPipeline once loaded
        self._img2img: Any = None  # StableDiffusionXLImg2ImgPipeline sharing its modules
        self._fast: tuple[Any, Any] | None = None  # the same two with the fast UNet and scheduler
        self._native_resolution = native_resolution_of_folder(model) or SDXL_NATIVE_RESOLUTION
        self._load_lock = threading.Lock()

    @property
    def native_resolution(self) -> int:
        return self._native_resolution

    @property
    def loaded(self) -> bool:
        return self._txt2img is not None

    def load(self) -> None:
        quiet_model_libraries()
        with self._load_lock:
            if self._txt2img is not None:
                return
            started = time.perf_counter()
            txt2img = self._load_txt2img()
            txt2img.to(self.device)
            if self.dtype != torch.float16:
                # Upcasting exists for fp16's small range; in bf16 or fp32 it only adds two casts per img2img.
                txt2img.vae.register_to_config(force_upcast=False)
            elif txt2img.vae.config.force_upcast:
                log.info("the VAE runs in float32 (it overflows in float16); an fp16-fix VAE avoids that")
            txt2img.set_progress_bar_config(disable=True)
            # Before the speed-ups change the base UNet: a LoRA is fused into a copy of the plain one.
            fast_unet = self._load_fast_unet(txt2img) if self.fast_model else None
            # SDPA attention is diffusers' default; these add fused QKV, channels_last and torch.compile.
            apply(txt2img, self.optimizations)
            # from_pipe shares the modules; without the dtype it would cast them (ours too) to float32.
            img2img = diffusers.StableDiffusionXLImg2ImgPipeline.from_pipe(
                txt2img, **{_dtype_kwarg(): self.dtype}
            )
            img2img.set_progress_bar_config(disable=True)
            if fast_unet is not None:
                self._fast = self._fast_pipelines(txt2img, fast_unet)
            self._native_resolution = int(txt2img.unet.config.sample_size) * int(txt2img.vae_scale_factor)
            self._txt2img, self._img2img = txt2img, img2img
            log.info(
                "loaded %s on %s as %s in %.1f s",
                self.model,
                self.device,
                str(self.dtype).removeprefix("torch."),
                time.perf_counter() - started,
            )

    def warm_up(
        self, shapes: Sequence[tuple[int, int, int]], *, guidance: float = 5.0, model: str = ModelKind.DEFAULT
    ) -> float:
        """Render 2 steps once per (images, width, height), so each shape is compiled before a job needs it.

        Under torch.compile every new input shape compiles again (minutes with max-autotune); the shapes to
        warm are the batch sizes the scheduler forms times the resolution buckets it serves (the
        aspect-ratio sizes, and their doubles for upscales): bot/domain/warm_up.py. A shape that runs out of
        memory is logged and skipped. `guidance` > 1 warms the CFG path
        (the UNet sees twice the images); jobs at guidance <= 1 are another shape. `model="fast"` warms the
        fast UNet (its own compiled graphs; fast jobs usually run at guidance <= 1). Without compile this only
        loads the model and touches the kernels once. Returns the seconds spent.
        """
        self.load()
        if self.optimizations.compile:
            # One compiled graph per shape: let dynamo keep them all (and the jobs' other shapes) compiled.
            dynamo: Any = torch._dynamo.config
            dynamo.recompile_limit = max(int(dynamo.recompile_limit), 2 * len(shapes))
            if hasattr(dynamo, "accumulated_recompile_limit"):
                limit = int(dynamo.accumulated_recompile_limit)
                dynamo.accumulated_recompile_limit = max(limit, 4 * len(shapes))
        started = time.perf_counter()
        for images, width, height in shapes:
            key = BatchKey(
                mode=RenderMode.TXT2IMG,
                width=width,
                height=height,
                steps=2,
                guidance=guidance,
                strength=None,
                model=model,
            )
            tasks = [
                ImageTask(job_id=0, index=index, prompt="warm-up", negative_prompt="", seed=index)
                for index in range(images)
            ]
            try:
                self.render(RenderBatch(key=key, tasks=tasks), lambda step, total: True)
            except BackendOutOfMemory:
                # Not fatal: the scheduler halves such a batch when a job needs it, and learns the size.
                log.warning(
                    "warm-up: %d image(s) of %d×%d do not fit in memory; skipped", images, width, height
                )
        elapsed = time.perf_counter() - started
        log.info("warmed up %d shape(s) in %.1f s", len(shapes), elapsed)
        return elapsed

    def _load_fast_unet(self, txt2img: Any) -> Any:
        assert self.fast_model is not None
        started = time.perf_counter()
        unet = load_fast_unet(self.fast_model, txt2img.unet, dtype=self.dtype).to(self.device)
        log.info("loaded the fast model %s in %.1f s", self.fast_model, time.perf_counter() - started)
        return unet

    def _fast_pipelines(self, txt2img: Any, unet: Any) -> tuple[Any, Any]:
        """txt2img and img2img with the fast UNet and scheduler; encoders, tokenizers and VAE are shared."""
        apply_to_unet(unet, self.optimizations)
        scheduler = make_fast_scheduler(self.fast_scheduler, txt2img.scheduler.config)
        dtype = {_dtype_kwarg(): self.dtype}
        fast = diffusers.StableDiffusionXLPipeline.from_pipe(txt2img, unet=unet, scheduler=scheduler, **dtype)
        fast_img2img = diffusers.StableDiffusionXLImg2ImgPipeline.from_pipe(fast, **dtype)
        for pipe in (fast, fast_img2img):
            pipe.set_progress_bar_config(disable=True)
        return fast, fast_img2img

    def _pipelines(self, model: str) -> tuple[Any, Any]:
        """(txt2img, img2img) for the batch's model."""
        if model == ModelKind.FAST:
            if self._fast is None:
                raise ValueError("This renderer has no fast model: set FAST_MODEL (on every worker).")
            return self._fast
        return self._txt2img, self._img2img

    def _load_txt2img(self) -> Any:
        kwargs: dict[str, Any] = {_dtype_kwarg(): self.dtype, "use_safetensors": True}
        if self.vae_id is not None:
            kwargs["vae"] = diffusers.AutoencoderKL.from_pretrained(self.vae_id, **kwargs)
        if self.dtype != torch.float32:
            # Half-precision weights are half the download; not every repo or folder has them.
            try:
                return diffusers.StableDiffusionXLPipeline.from_pretrained(
                    self.model, variant="fp16", **kwargs
                )
            except (OSError, ValueError) as exc:
                log.info("no fp16 variant of %s (%s); loading the default weights", self.model, exc)
        return diffusers.StableDiffusionXLPipeline.from_pretrained(self.model, **kwargs)

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        strength = self._check(batch)
        self.load()
        scale = int(self._txt2img.vae_scale_factor)
        if batch.key.width % scale or batch.key.height % scale:
            raise ValueError(
                f"Size {batch.key.width}×{batch.key.height} is not a multiple of the VAE factor {scale}."
            )
        stopped_at: list[int] = []

        def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            # num_timesteps is the count really run (img2img: int(steps × strength)): progress ends at 100%.
            total = int(pipe.num_timesteps)
            if not on_step(step + 1, total):
                stopped_at[:] = [step + 1, total]
                raise _Stop  # leaves at once: no more steps and no VAE decode for a cancelled batch
            return tensors

        out_of_memory: str | None = None
        try:
            with torch.inference_mode():
                images = self._call(batch, strength, step_end)
        except _Stop:
            step, total = stopped_at
            raise GenerationInterrupted(f"stopped after step {step} of {total}") from None
        except _OOM_ERRORS as exc:
            # Only the message is kept: the traceback holds the batch's tensors, and they must be freed
            # before the scheduler retries with a smaller batch.
            out_of_memory = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if out_of_memory is not None:
            self._recover_from_oom()
            raise BackendOutOfMemory(f"{len(batch.tasks)} image(s) did not fit: {out_of_memory}")
        return images

    def _check(self, batch: RenderBatch) -> float | None:
        """Reject a malformed batch up front; returns the img2img strength (None for txt2img)."""
        key = batch.key
        if not batch.tasks:
            raise ValueError("The batch has no tasks.")
        if key.width <= 0 or key.height <= 0:
            raise ValueError(f"Size {key.width}×{key.height} is not positive.")
        if key.steps < 1:
            raise ValueError(f"Steps must be at least 1; got {key.steps}.")
        if key.model not in (ModelKind.DEFAULT, ModelKind.FAST):
            raise ValueError(f"Unknown model {key.model!r}.")
        if key.model == ModelKind.FAST and self.fast_model is None:
            raise ValueError("This renderer has no fast model: set FAST_MODEL (on every worker).")
        if key.mode is RenderMode.TXT2IMG:
            return None
        missing = [f"job {task.job_id} image {task.index}" for task in batch.tasks if task.source is None]
        if missing:
            raise ValueError(f"Mode {key.mode.value} needs a source image, missing for {', '.join(missing)}.")
        strength = key.strength if key.strength is not None else DEFAULT_STRENGTH[key.mode]
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"Strength must be in (0, 1]; got {strength}.")
        return strength

    def render_latents(self, batch: RenderBatch) -> torch.Tensor:
        """The batch's denoised latents (before the VAE), float32 on the CPU: for checking an optimized
        backend against a plain one with the same seeds (relative error, NaN)."""
        strength = self._check(batch)
        self.load()
        with torch.inference_mode():
            latents = self._pipeline_call(batch, strength, None, output_type="latent")
        return torch.as_tensor(latents).detach().float().cpu()

    def _call(
        self, batch: RenderBatch, strength: float | None, step_end: StepEndCallback
    ) -> list[Image.Image]:
        output = self._pipeline_call(batch, strength, step_end, output_type="pil")
        images: list[Image.Image] = [image.convert("RGB") for image in output]
        return images

    def _pipeline_call(
        self,
        batch: RenderBatch,
        strength: float | None,
        step_end: StepEndCallback | None,
        *,
        output_type: str,
    ) -> Any:
        """One diffusers call for the batch; returns the pipeline's `images` (PIL list or latent tensor)."""
        key, tasks = batch.key, batch.tasks
        txt2img, img2img = self._pipelines(key.model)
        embeds = self._encode(txt2img, tasks, guidance=key.guidance)
        # MPS generators are unreliable, so MPS draws its noise on the CPU (as diffusers advises).
        generator_device = "cpu" if self.device == "mps" else self.device
        generators = [torch.Generator(device=generator_device).manual_seed(task.seed) for task in tasks]
        common: dict[str, Any] = {
            **embeds,
            "guidance_scale": key.guidance,
            "generator": generators,
            "callback_on_step_end": step_end,
            "output_type": output_type,
        }
        if key.mode is RenderMode.TXT2IMG:
            output = txt2img(width=key.width, height=key.height, num_inference_steps=key.steps, **common)
        else:
            assert strength is not None
            sources = [_fit(task.source, key.width, key.height) for task in tasks if task.source is not None]
            output = img2img(
                image=sources,
                strength=strength,
                num_inference_steps=img2img_schedule_steps(key.steps, strength),
                **common,
            )
        return output.images

    def _encode(self, pipe: Any, tasks: Sequence[ImageTask], *, guidance: float) -> dict[str, torch.Tensor]:
        """Text embeddings for the batch, with SDXL's zero embedding for each empty negative prompt.

        diffusers zeroes the negatives only when the whole call has none, so a batch mixing empty and
        written negatives would treat an empty one differently than a lone call does; we zero per row.
        """
        cfg = guidance > 1.0  # diffusers skips the unconditional pass (and the negatives) at guidance <= 1
        prompt_embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
            prompt=[task.prompt for task in tasks],
            device=torch.device(self.device),
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=[task.negative_prompt for task in tasks] if cfg else None,
        )
        embeds = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        if cfg:
            assert negative_embeds is not None
            assert negative_pooled is not None
            if pipe.config.force_zeros_for_empty_prompt:
                for row, task in enumerate(tasks):
                    if not task.negative_prompt.strip():
                        negative_embeds[row] = 0
                        negative_pooled[row] = 0
            embeds["negative_prompt_embeds"] = negative_embeds
            embeds["negative_pooled_prompt_embeds"] = negative_pooled
        return embeds

    def _recover_from_oom(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        # An OOM while decoding can leave the VAE upcast to float32, which the next call would not expect.
        if self._txt2img is not None and self._txt2img.vae.dtype != self.dtype:
            self._txt2img.vae.to(dtype=self.dtype)


def _fit(source: Image.Image, width: int, height: int) -> Image.Image:
    """The source as RGB at the batch size; Lanczos keeps edges sharp when enlarging for an upscale."""
    image = source.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image
