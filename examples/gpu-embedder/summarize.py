"""A WASM actor after the GPU one: the two runtimes mix in one route."""


def summarize(payload: dict) -> dict:
    embedding = payload["embedding"]
    top = max(range(len(embedding)), key=lambda i: abs(embedding[i]))
    return {**payload, "dims": len(embedding), "strongest_dim": top}
