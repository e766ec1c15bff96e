"""Models on the service: pulls through a briefly opened egress, the [models] list, warm-up.

- ``spec``: the config values (model names, keep-alive, ``service.egress``);
- ``progress``: Ollama's pull progress lines, read and summed (pure);
- ``api``: the few Ollama endpoints used here (``/api/pull``, ``/api/tags``,
  ``/api/ps``, ``/api/generate``), over httpx;
- ``egress``: opening the service's IP filter at runtime and closing it again,
  crash-safe;
- ``pull``: pulling a list of models through that gate;
- ``declared``: what apply does with ``[models]`` (pull the missing, warm, verify);
- ``output``: progress for people (rich on a terminal, plain lines) or JSON lines.
"""
