"""ollama-ops: run an Ollama server as a hardened, sized, watched systemd service.

Kept free of imports so that ``ollama_ops.sim`` can be loaded by an older
Python inside a test container without pulling in the rest of the package.
"""

__version__ = "0.1.0"
