"""The package version, read by the build backend and by run records."""

__version__ = "0.1.0"
