"""Model and alias names, and the references that point at a model version.

A reference is how a user names a version in one string, so it must parse one
way only: ``"fraud"`` (the latest version), ``"fraud/3"`` (version 3) and
``"fraud@champion"`` (whatever the alias points at). That is why names may not
contain ``/`` or ``@``, and why an alias may not look like a number or be
``latest``, which every model already answers to.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass

from loopstack.core.errors import ValidationError

# \Z, not $: $ also matches before a final newline, which let "fraud\n" be registered
MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}\Z")
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}\Z")
LATEST = "latest"


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: a name and at most one of version or alias.

    Examples
    --------
    >>> parse_ref("fraud@champion")
    ModelRef(name='fraud', version=None, alias='champion')
    >>> parse_ref("fraud/3")
    ModelRef(name='fraud', version=3, alias=None)
    """

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def validate_model_name(name: str) -> str:
    """Return `name` if it can name a model, else raise a ValidationError saying why."""
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise ValidationError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter (no '/' or '@', which separate versions and aliases), "
            "e.g. 'fraud-detector'"
        )
    return name


def validate_alias(alias: str) -> str:
    """Return `alias` if it can name an alias, else raise a ValidationError saying why."""
    if not isinstance(alias, str) or not ALIAS_NAME.match(alias):
        raise ValidationError(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '_' or '-', starting with a letter, e.g. 'champion'"
        )
    if alias.lower() == LATEST:
        raise ValidationError(
            f"alias {alias!r} is reserved: '<name>@latest' always means the newest version; choose another alias name"
        )
    return alias


def validate_version(version: object) -> int:
    """Versions are positive integers; accept digit strings (they come from the CLI) and NumPy integers."""
    if isinstance(version, str) and _is_number(version):
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
        raise ValidationError(f"invalid model version {version!r}: versions are integers from 1")
    return int(version)


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() is also true of '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def parse_ref(ref: str, version: int | str | None = None) -> ModelRef:
    """Parse ``name``, ``name/3``, ``name@alias`` (or `name` plus an explicit `version`)."""
    if not isinstance(ref, str) or not ref:
        raise ValidationError(f"invalid model reference {ref!r}: use 'name', 'name/3' or 'name@alias'")
    if "@" in ref:
        name, _, alias = ref.partition("@")
        _no_version(ref, version)
        validate_model_name(name)
        if alias.lower() == LATEST:
            return ModelRef(name)
        return ModelRef(name, alias=validate_alias(alias))
    if "/" in ref:
        name, _, number = ref.partition("/")
        _no_version(ref, version)
        if not _is_number(number):
            raise ValidationError(f"invalid model reference {ref!r}: after '/' comes a version number, e.g. 'fraud/3'")
        return ModelRef(validate_model_name(name), version=validate_version(int(number)))
    validate_model_name(ref)
    return ModelRef(ref, version=None if version is None else validate_version(version))


def _no_version(ref: str, version: object) -> None:
    if version is not None:
        raise ValidationError(f"model reference {ref!r} already names a version; pass either it or version=, not both")
