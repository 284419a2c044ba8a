"""The model registry: models logged by runs, numbered versions, aliases and flavors.

A model is logged under a run (`ActiveRun.log_model`) as a content-addressed
package with its signature, registered as the next version of a name, given
aliases such as ``champion`` that move atomically, and loaded back by
reference (``"fraud@champion"``, ``"fraud/3"``) with every byte verified.

Names are imported lazily: ``import loopstack.registry`` loads no model
library, and the table definitions load without the rest.
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

_EXPORTS = {
    "Registry": "loopstack.registry.store",
    "LoadedModel": "loopstack.registry.model",
    "LoggedModel": "loopstack.registry.entities",
    "ModelVersion": "loopstack.registry.entities",
    "RegisteredModel": "loopstack.registry.entities",
    "Signature": "loopstack.registry.signature",
    "Schema": "loopstack.registry.signature",
    "ColumnSpec": "loopstack.registry.signature",
    "infer_signature": "loopstack.registry.signature",
    "check_input": "loopstack.registry.checks",
    "Flavor": "loopstack.registry.flavors",
    "FLAVOR_NAMES": "loopstack.registry.flavors",
    "detect_flavor": "loopstack.registry.flavors",
    "get_flavor": "loopstack.registry.flavors",
    "ModelRef": "loopstack.registry.names",
    "parse_ref": "loopstack.registry.names",
    "register_model": "loopstack.registry.api",
    "load_model": "loopstack.registry.api",
    "set_alias": "loopstack.registry.api",
    "delete_alias": "loopstack.registry.api",
    "delete_model_version": "loopstack.registry.api",
    "delete_model": "loopstack.registry.api",
    "get_model_version": "loopstack.registry.api",
    "list_models": "loopstack.registry.api",
    "search_model_versions": "loopstack.registry.api",
}

__all__ = [
    # the fluent API
    "register_model",
    "load_model",
    "set_alias",
    "delete_alias",
    "delete_model_version",
    "delete_model",
    "get_model_version",
    "list_models",
    "search_model_versions",
    # objects
    "Registry",
    "LoadedModel",
    "LoggedModel",
    "ModelVersion",
    "RegisteredModel",
    "ModelRef",
    "parse_ref",
    # signatures
    "Signature",
    "Schema",
    "ColumnSpec",
    "infer_signature",
    "check_input",
    # flavors
    "Flavor",
    "FLAVOR_NAMES",
    "detect_flavor",
    "get_flavor",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
