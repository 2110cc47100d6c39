"""Handlers for the end of a route: one drops messages (returns None), one raises."""


def drop_empty(payload: dict) -> dict | None:
    """Returning None ends the message here, successfully (it goes to x-sink)."""
    if not payload.get("text", "").strip():
        return None
    return payload


def require_language(payload: dict) -> dict:
    """Raises for payloads without a language: the message ends at x-sump with the traceback."""
    if "language" not in payload:
        raise ValueError(f"payload has no 'language' (keys: {sorted(payload)})")
    return payload
