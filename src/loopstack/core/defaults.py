"""The file name, the name rule and the defaults of `loopstack.yaml`, without pydantic.

``Project.init`` with nothing but a name writes a config made of these
defaults; checking the name is then all the validation there is to do, so it
does that here and leaves building the pydantic model (`core.config`, whose
import costs more than the rest of a first call) to the first use of
``Project.config``. A test holds `DEFAULTS` to what `ProjectConfig` fills in.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

CONFIG_FILE = "loopstack.yaml"
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}\Z")
ENVIRONMENT_KEYS = ("metadata", "artifacts", "online_store")  # LOOPSTACK_<KEY> overrides these


def environment_override(key: str) -> str | None:
    """The LOOPSTACK_* variable that overrides `key` in this process, when one is set (and not empty)."""
    variable = f"LOOPSTACK_{key.upper()}"
    return variable if key in ENVIRONMENT_KEYS and os.environ.get(variable) else None

# what ProjectConfig(name=...).model_dump() holds besides the name, in its order
DEFAULTS: dict[str, Any] = {
    "metadata": "sqlite:///.loopstack/meta.db",
    "artifacts": ".loopstack/artifacts",
    "online_store": "sqlite:///.loopstack/online.db",
    "offline_store": "duckdb",
    "definitions": [],
    "tracking": {
        "flush_interval_s": 1.0,
        "heartbeat_interval_s": 5.0,
        "max_buffered_points": 1_000_000,
        "capture_environment": True,
        "capture_git": True,
        "sample_resources_s": 1.0,
    },
    "loop": {},
}


def default_config(data: dict[str, Any]) -> dict[str, Any] | None:
    """The full config for `data` when it is only a valid name and no LOOPSTACK_ variable overrides
    a store (so the defaults are all there is); else None: validate it with `core.config`."""
    name = data.get("name")
    if data.keys() != {"name"} or type(name) is not str or not NAME_PATTERN.match(name):
        return None
    if any(environment_override(key) for key in ENVIRONMENT_KEYS):
        return None
    return {"name": name, **copy.deepcopy(DEFAULTS)}


def dump_yaml(data: dict[str, Any]) -> str:
    """The YAML text of a config's values (what ``core.config.dump_config`` writes for the same values)."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when installed; the same text either way
    return yaml.dump(data, Dumper=dumper, sort_keys=False)
