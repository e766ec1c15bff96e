"""`ollama-ops export ansible`: a role that rolls ollama-ops out host by host, gated on health.

``wheel`` packs the running ollama-ops, ``wheelhouse`` fetches the wheels each
target Python needs, ``role`` renders the role's generated files (pure) next
to the static ones in ``ollama_ops/data/ansible``, ``export`` writes the
directory.
"""
