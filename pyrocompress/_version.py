"""The package's version, in one place (``pyproject.toml`` reads it, ``pyrocompress --version`` prints it)."""
__version__ = "0.1.0"
