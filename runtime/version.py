"""The project version, read from the installed distribution so that there is one source of truth."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("auto-csc")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
