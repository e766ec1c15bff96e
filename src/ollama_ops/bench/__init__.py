"""Benchmark an Ollama server: load shapes, a light streaming client, statistics, reports."""
