"""Tune Ollama's settings on a running service: ``tune = bench x apply`` (docs/tune.md).

Pure core: ``params`` (the settings that can be swept and their values),
``plan`` (the sweep: a grid with the current setting first), ``pick`` (the
winner and why each other setting lost) and ``report`` (text and JSON).
The edges: ``sweep`` drives a sweep through an injected :class:`sweep.Applier`
and a measuring function; ``applier`` is the real one (plan + apply with
rollback, through the foundation); ``marker`` makes an interrupted or killed
tune restorable by the next ``tune`` or ``apply``; ``configfile`` writes the
winner into the deployment config; ``command`` is the CLI's side.
"""
