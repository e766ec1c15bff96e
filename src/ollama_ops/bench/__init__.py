"""Benchmark an Ollama server: load shapes, a light streaming client, statistics, reports.

Library entry point: ``runner.run(shape, target, workload) -> Result``, then
``summary.summarize(result, slo)`` for the figures (docs/bench.md).
Modules: ``shapes`` (load shapes, arrivals), ``workload`` (prompts, output
lengths), ``slo``, ``client`` (the HTTP/1.1 client), ``wire`` (the two
streaming APIs), ``runner`` (the run), ``records``, ``stats``, ``summary``,
``report`` (text), ``compare``, ``plots``, ``progress``, ``options`` and
``command`` (the CLI's side).
"""
