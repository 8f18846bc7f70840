"""The docs, examples, notebook, benchmarks smoke run, packaging and import time."""
