"""The version of probekit, apart from everything else so that any module can name it."""

__version__ = "0.1.0"
