"""asya: plain Python handlers as sandboxed WebAssembly actors.

User handlers never import this package, but for `asya.http` (awaitable HTTP, for `async def`
handlers that call a model API); the rest is the build and development tooling around them.
"""

__version__ = "0.1.0"
