"""Text preprocessor: a plain function handler. Imports nothing from asya."""


def process(payload: dict) -> dict:
    text = payload["text"]
    words = text.split()
    return {
        **payload,
        "clean_text": " ".join(w.strip(".,!?;:").lower() for w in words),
        "word_count": len(words),
    }
