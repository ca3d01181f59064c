"""impasto's version, from the installed package's metadata."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("impasto")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+src"
