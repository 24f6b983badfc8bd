"""lra-bench: a Long Range Arena harness for comparing efficient attention fairly."""

__version__ = "0.1.0"
