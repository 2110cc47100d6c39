"""Refinement step inserted by the judge: nudges the score toward a decision."""


def refine(payload: dict) -> dict:
    score = payload["score"]
    nudged = score + 0.15 if score >= 0.5 else score - 0.15
    return {
        **payload,
        "score": round(nudged, 3),
        "refinements": payload.get("refinements", 0) + 1,
    }
