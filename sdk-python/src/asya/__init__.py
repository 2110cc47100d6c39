"""asya: plain Python handlers as sandboxed WebAssembly actors.

User handlers never import this package; it is the build and development tooling around them.
"""

__version__ = "0.1.0"
