"""The review flow: plain Python control flow over the payload. Each called function is its own
actor (handlers.py); `asya flow compile` turns the if/elif/else into router actors.

Run it: asya dev examples/review-flow --payload '{"text": "  Great product!  "}'
"""


def review_flow(p: dict) -> dict:
    p = clean_text(p)
    if p["language"] == "en":
        p = english_sentiment(p)
    elif p["language"] == "es":
        p = spanish_sentiment(p)
    else:
        p["sentiment"] = "neutral"
    p["reviewed"] = True
    return p


# The functions a flow calls are actors, found by name at run time, not Python imports.
# ruff: noqa: F821
