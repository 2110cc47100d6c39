"""Handlers of the review flow: plain functions over a payload dict, no asya imports."""

SPANISH_WORDS = {"el", "la", "es", "muy", "bueno", "malo", "producto", "excelente"}
POSITIVE = {"great", "good", "excellent", "love", "bueno", "excelente", "genial"}
NEGATIVE = {"bad", "terrible", "awful", "hate", "malo", "horrible"}


def clean_text(payload: dict) -> dict:
    """Normalises whitespace and detects the language (a toy detector)."""
    text = " ".join(str(payload.get("text", "")).split())
    words = {w.strip(".,!?¡¿").lower() for w in text.split()}
    if not words - {""}:
        language = "unknown"
    elif words & SPANISH_WORDS:
        language = "es"
    elif text.isascii():
        language = "en"
    else:
        language = "unknown"
    return {**payload, "text": text, "language": language}


def _score(text: str) -> str:
    words = {w.strip(".,!?¡¿").lower() for w in text.split()}
    score = len(words & POSITIVE) - len(words & NEGATIVE)
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def english_sentiment(payload: dict) -> dict:
    return {**payload, "sentiment": _score(payload["text"]), "model": "en-lexicon"}


def spanish_sentiment(payload: dict) -> dict:
    return {**payload, "sentiment": _score(payload["text"]), "model": "es-lexicon"}
