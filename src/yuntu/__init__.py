"""Yuntu: one backend for Yuntu Cloud, package distribution, PicKitchen and CineGen."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("yuntu")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
