"""A GPU-style handler that cannot be WASM: it uses torch (CUDA when present) to embed text.

torch is imported lazily in the constructor, which runs once per process in the native runtime
(`runtime: python`). Without torch, or without a GPU, it still works: on CPU through torch, or
through a small pure-Python fallback when torch is not installed, so the example runs anywhere.
"""

from __future__ import annotations

import hashlib
import math


class Embedder:
    def __init__(self, device: str = "auto", dim: int = 16) -> None:
        self.dim = dim
        try:
            import torch
        except ImportError:
            self.torch = None
            self.device = "python"
            return
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        generator = torch.Generator().manual_seed(0)
        # A fixed random projection stands in for a model's weights.
        self.projection = torch.randn(256, dim, generator=generator).to(device)

    def _features(self, text: str) -> list[float]:
        counts = [0.0] * 256
        for token in text.lower().split():
            counts[hashlib.blake2b(token.encode(), digest_size=1).digest()[0]] += 1.0
        return counts

    def process(self, payload: dict) -> dict:
        features = self._features(payload["text"])
        if self.torch is not None:
            x = self.torch.tensor(features, device=self.device)
            vector = (x @ self.projection).tolist()
        else:
            vector = [
                sum(f * math.sin((i + 1) * (j + 1)) for i, f in enumerate(features))
                for j in range(self.dim)
            ]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return {**payload, "embedding": [round(v / norm, 6) for v in vector],
                "device": self.device}  # fmt: skip
