"""Text classifier: a class handler whose constructor loads a model once.

asya constructs the class once, with no arguments, when the component is built; the loaded model
is part of the snapshot, so no message ever pays for loading it.
"""

import json
from pathlib import Path

_MODEL_FILE = Path(__file__).with_name("model.json")


class TextClassifier:
    loads = 0  # how many times a model was loaded in this process

    def __init__(self, model_path: str = str(_MODEL_FILE)) -> None:
        with open(model_path, encoding="utf-8") as f:
            model = json.load(f)
        self.positive = set(model["positive"])
        self.negative = set(model["negative"])
        self.threshold = float(model["threshold"])
        TextClassifier.loads += 1
        print(f"classifier: model loaded from {model_path}")

    def process(self, payload: dict) -> dict:
        words = payload["clean_text"].split()
        pos = sum(w in self.positive for w in words)
        neg = sum(w in self.negative for w in words)
        score = (pos + 1) / (pos + neg + 2)  # Laplace-smoothed share of positive words
        label = "positive" if score >= self.threshold else "negative"
        return {
            **payload,
            "label": label,
            "score": round(score, 3),
            "model_loads": self.loads,
        }
