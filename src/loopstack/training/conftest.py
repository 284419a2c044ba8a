"""Doctests of this package need torch (the ``torch`` extra), lora.py's need peft; skip collecting them without."""

from importlib.util import find_spec

collect_ignore_glob = [] if find_spec("torch") is not None else ["*.py"]
if find_spec("peft") is None:  # lora.py's examples need the lora extra
    collect_ignore_glob.append("lora.py")
