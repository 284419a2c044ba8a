"""Doctests of this package need torch (the ``torch`` extra); skip collecting them without it."""

from importlib.util import find_spec

collect_ignore_glob = [] if find_spec("torch") is not None else ["*.py"]
