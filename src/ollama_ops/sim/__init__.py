"""An Ollama-compatible simulator: the HTTP API, the scheduler and the OS side of
``ollama serve``, with timed token streams and injectable faults.

It stands in for a real Ollama where no model or GPU can run, so that the
health checker, the recovery policy, the benchmark and the tuner have a server
that behaves like Ollama in the ways they care about. See docs/simulator.md.

Portability contract (the package is installed as ``/usr/local/bin/ollama``
inside Debian 11/12/13 test containers, whose python3 is 3.9, 3.11 or 3.13):

* every module starts with ``from __future__ import annotations``;
* no ``match``, no ``X | Y`` outside annotations, no ``dataclass(slots=...)``;
* only the standard library and aiohttp at run time;
* no imports from other ``ollama_ops`` modules, only ``ollama_ops.sim.*``.
"""

from __future__ import annotations

#: The version the simulator reports on /api/version and ``ollama -v``.
VERSION = "0.33.0-sim"

__all__ = ["VERSION"]
