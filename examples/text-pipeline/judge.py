"""An envelope-mode judge: when the classifier is unsure, it inserts a refinement step
(and itself again) into the rest of the route. This is the tutorial's pattern."""


def judge(envelope: dict) -> dict:
    payload = envelope["payload"]
    route = envelope["route"]
    refinements = payload.get("refinements", 0)
    if abs(payload["score"] - 0.5) < 0.2 and refinements < 2:
        # Low confidence: refine, then judge again, before continuing as planned.
        route["next"] = ["refine", "judge", *route["next"]]
        payload["verdict"] = "uncertain"
    else:
        payload["verdict"] = "confident"
    return envelope
