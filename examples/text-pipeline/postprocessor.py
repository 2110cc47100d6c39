"""Postprocessor: formats the final result."""


def process(payload: dict) -> dict:
    return {
        **payload,
        "summary": f"{payload['label']} ({payload['score']:.2f}) for {payload['word_count']} words",
    }
