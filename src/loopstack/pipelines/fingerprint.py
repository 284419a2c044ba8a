"""Digests of a step's code and parameters: what the cache key is made of.

A step's code digest covers what can change its output without changing its
inputs: the function's syntax tree (so comments, blank lines, the docstring
and the decorator line do not count), the values its closure captures, the
module-level constants it reads (also through default arguments and class
attributes), and, recursively, the code of helper functions and classes from
user modules that it calls. Library code (anything installed under
site-packages or the standard library) counts by name and
version only, because hashing numpy's source on every run would be slow and
a library upgrade is pinned by the environment, not the pipeline.
"""

from __future__ import annotations
import __future__

import ast
import functools
import hashlib
import inspect
import json
import linecache
import operator
import pickle
import sys
import sysconfig
import textwrap
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

_SIMPLE = (int, float, str, bytes, bool, type(None), complex)
_JSON_SCALARS = (str, int, float, bool, type(None))
_LIBRARY_ROOTS = tuple({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"], sys.prefix})
_CONTAINERS = (tuple, list, frozenset, set, dict)
_MAX_DEPTH = 100  # nesting deeper than this is not a constant table; it would also exhaust the recursion limit


def code_digest(function: Any) -> str:
    """A sha256 of the function's code, closure, constants and user-code helpers.

    Examples
    --------
    >>> def double(x):
    ...     return 2 * x
    >>> def double_commented(x):
    ...     # the same code: a comment does not change the digest
    ...     return 2 * x
    >>> code_digest(double) == code_digest(double_commented)
    True
    """
    digest = hashlib.sha256()
    _walk(function, digest, set())
    return digest.hexdigest()


def value_digest(value: Any) -> str:
    """A sha256 of a parameter value: canonical JSON where JSON keeps every type, else a typed form.

    JSON writes ``{1: "a"}`` as ``{"1": "a"}`` and a tuple as a list: such values (and other builtin
    containers) are digested by their sorted repr, which keeps the types, so that a run with the one is
    never served the other's cached result. Anything else is digested by its pickle.

    Examples
    --------
    >>> value_digest({1: "a"}) == value_digest({"1": "a"}), value_digest((1, 2)) == value_digest([1, 2])
    (False, False)
    """
    if _is_exact_json(value):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
        return hashlib.sha256(b"json:" + text.encode()).hexdigest()
    if _is_plain_container(value, limit=1000):  # larger ones by pickle, as always: their digests stay valid
        return hashlib.sha256(b"typed:" + _stable_repr(value).encode()).hexdigest()
    if callable(value) and hasattr(value, "__code__"):
        return code_digest(value)
    try:
        return hashlib.sha256(b"pickle:" + pickle.dumps(value, protocol=5)).hexdigest()
    except Exception:  # unpicklable: fall back to its text, the best we can do
        return hashlib.sha256(b"repr:" + repr(value).encode()).hexdigest()


def _is_exact_json(value: Any) -> bool:
    """Whether JSON writes `value` with its types intact: builtin scalars, lists, and dicts with str keys.

    Not a tuple (written as a list), an int key (written as a string) or a subclass (an IntEnum is written
    as its int). A value that passes keeps the digest it always had, so its cache entries stay valid.
    """
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is list:
        return all(_is_exact_json(item) for item in value)
    if kind is dict:
        return all(type(key) is str and _is_exact_json(item) for key, item in value.items())
    return False


def _walk(obj: Any, digest: Any, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    function = inspect.unwrap(obj) if callable(obj) else obj
    function = getattr(function, "__func__", function)  # bound and class methods
    code = getattr(function, "__code__", None)
    if code is None:
        return
    digest.update(_syntax(function, code).encode())
    for name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
        try:
            _mix(cell.cell_contents, digest, seen, name)
        except ValueError:  # an empty cell: a name assigned later in the enclosing scope
            digest.update(b"<empty cell>")
    _mix_defaults(function, digest, seen)
    namespace = function.__globals__
    names = _global_names(code)
    for name in sorted(names):
        if name in namespace:
            digest.update(f"\x00global {name}=".encode())
            _mix(namespace[name], digest, seen, name)
            _mix_attributes(namespace[name], names, digest, seen)


def _mix_defaults(function: Any, digest: Any, seen: set[int]) -> None:
    """Default argument values: evaluated once at module scope (``def scaled(x, k=SCALE)``), so the
    syntax tree names SCALE but only the value says what the call computes."""
    for default in getattr(function, "__defaults__", None) or ():
        digest.update(b"\x00default=")
        _mix(default, digest, seen)
    for name, default in sorted((getattr(function, "__kwdefaults__", None) or {}).items()):
        digest.update(f"\x00kwdefault {name}=".encode())
        _mix(default, digest, seen)


def _mix_attributes(value: Any, names: set[str], digest: Any, seen: set[int], depth: int = 0) -> None:
    """What the code reads from a user module it imported whole (``import helpers; helpers.K``).

    The module itself counts by name only, so its attributes that the code names are mixed in
    (names are over-approximated, as for globals), down through ``pkg.sub.K`` chains.
    """
    if not isinstance(value, types.ModuleType) or not is_user_module(value) or depth > 4:
        return
    members = vars(value)
    for attribute in sorted(names & members.keys()):
        digest.update(f"\x00attribute {value.__name__}.{attribute}=".encode())
        _mix(members[attribute], digest, seen, f"{value.__name__}.{attribute}")
        _mix_attributes(members[attribute], names, digest, seen, depth + 1)


def _syntax(function: Any, code: types.CodeType) -> str:
    """The function's AST without docstring and decorators; bytecode when there is no source.

    Bytecode too when the source file no longer holds the code that runs (edited since the
    process imported it): a long-lived scheduler would otherwise store what the old code computed
    under the new code's digest, and a fresh process would be served it.
    """
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return _bytecode(code)
    if not _compiles_to(code):
        return _bytecode(code)
    node = tree.body[0] if tree.body else None
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        node.decorator_list = []
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            node.body = body[1:] or [ast.Pass()]
        # the name is not behaviour: renaming a step must not invalidate its cache
        node.name = "_"
    if code.co_name == "<lambda>":
        # a lambda's source is its whole line, which may hold other lambdas: its own bytecode tells it apart
        return f"{ast.dump(tree, include_attributes=False)}|{_bytecode(code)}"
    return ast.dump(tree, include_attributes=False)


_FUTURE_FLAGS = functools.reduce(operator.or_, (getattr(__future__, name).compiler_flag
                                                 for name in __future__.all_feature_names), 0)


def _compiles_to(code: types.CodeType) -> bool:
    """Whether the source file, as `inspect.getsource` just read it, still compiles to `code`.

    The whole file is compiled, not the function alone: a function's bytecode depends on its
    module (Python 3.11 reads an imported module's attributes with LOAD_ATTR, not LOAD_METHOD)
    and on its enclosing scopes (a closure's free variables).
    """
    source = "".join(linecache.getlines(code.co_filename))
    module = _compiled(source, code.co_filename, code.co_flags & _FUTURE_FLAGS) if source else None
    if module is None:
        return False
    wanted = _bytecode(code)
    return any(_bytecode(c) == wanted for c in _nested_code(module) if c.co_name == code.co_name)


@functools.lru_cache(maxsize=32)
def _compiled(source: str, filename: str, flags: int) -> types.CodeType | None:
    try:
        return compile(source, filename, "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return None


def _nested_code(code: types.CodeType) -> list[types.CodeType]:
    found = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return found + [inner for c in found for inner in _nested_code(c)]


def _bytecode(code: types.CodeType) -> str:
    constants = [_bytecode(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()}|{constants}|{code.co_names}"


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _mix(value: Any, digest: Any, seen: set[int], name: str = "") -> None:
    """Fold one referenced value into the digest; `name` (the global or captured variable) is for the warning."""
    if isinstance(value, types.ModuleType):
        digest.update(f"module {value.__name__} {_version(value)}".encode())
    elif isinstance(value, _SIMPLE) or _is_plain_container(value):
        _write_stable_repr(value, digest)
    elif _is_ndarray(value) and value.dtype.kind != "O":
        # dtype, shape and raw bytes: an edited weight or lookup array changes the digest
        digest.update(f"ndarray {value.dtype.descr} {value.shape} ".encode())
        digest.update(sys.modules["numpy"].ascontiguousarray(value).reshape(-1).view("u1"))
    elif isinstance(value, type) or callable(value):
        step_function = getattr(value, "function", None)  # a Step: its function is the code
        target = step_function if callable(step_function) else value
        if _is_user_code(target):
            digest.update(f"code {getattr(target, '__qualname__', '')}".encode())
            if isinstance(target, type):
                _mix_class(target, digest, seen)
            else:
                _walk(target, digest, seen)
        else:
            digest.update(f"ref {getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}".encode())
    else:
        if type(value) in _CONTAINERS or _is_ndarray(value):
            _warn_by_type(value, name)
        digest.update(f"object {type(value).__module__}.{type(value).__qualname__}".encode())


def _warn_by_type(value: Any, name: str) -> None:
    """Say so when a builtin container or an array counts by type only: an edit to it would not change
    the digest, and the step's stale cached result would be served."""
    warnings.warn(
        f"{name or 'a value'} ({type(value).__name__}) read by a step holds objects that cannot be hashed by value "
        "(or is nested too deep, or refers to itself), so the step's code digest sees only its type; "
        "pin the step with @step(version=...) and bump it when this value changes",
        stacklevel=4,
    )


def _is_ndarray(value: Any) -> bool:
    numpy = sys.modules.get("numpy")  # never imported here: without numpy loaded there is no ndarray
    return numpy is not None and type(value) is numpy.ndarray


def _mix_class(cls: type, digest: Any, seen: set[int]) -> None:
    try:
        digest.update(ast.dump(ast.parse(textwrap.dedent(inspect.getsource(cls))), include_attributes=False).encode())
    except (OSError, TypeError, SyntaxError):
        pass
    # the methods' own globals and helpers: the class source alone misses a constant or a
    # helper function that a method reads from its module
    for name, member in sorted(vars(cls).items()):
        function = getattr(member, "__func__", None) or getattr(member, "fget", None) or member
        if getattr(function, "__code__", None) is not None:
            digest.update(f"\x00member {name}".encode())
            _walk(function, digest, seen)
        elif not (name.startswith("__") and name.endswith("__")):
            # a plain attribute (``k = SCALE``) is evaluated at module scope: its value counts
            digest.update(f"\x00attribute {name}=".encode())
            _mix(member, digest, seen)
    for base in cls.__bases__:
        _mix(base, digest, seen)


def _is_plain_container(value: Any, limit: int | None = None) -> bool:
    """Builtin tuples, lists, sets and dicts of simple values, nested too (exact types: a subclass
    may carry state), of any size, or of up to `limit` items in all.

    Code constants had a cutoff of 1000 items, above which a lookup table counted by its type
    only: editing it left the digest as it was and served a stale cached result.
    """
    budget = [limit if limit is not None else -1]
    return _plain(value, budget, set(), 0)


def _plain(value: Any, budget: list[int], path: set[int], depth: int) -> bool:
    kind = type(value)
    if kind not in _CONTAINERS or id(value) in path or depth > _MAX_DEPTH:
        return False
    items: Iterable[Any] = (*value.keys(), *value.values()) if kind is dict else value
    if budget[0] >= 0:
        budget[0] -= len(value) * (2 if kind is dict else 1)
        if budget[0] < 0:
            return False
    path.add(id(value))
    plain = all(isinstance(v, _SIMPLE) or _plain(v, budget, path, depth + 1) for v in items)
    path.discard(id(value))
    return plain


def _write_stable_repr(value: Any, digest: Any) -> None:
    """Feed `_stable_repr(value)` to the digest in pieces of about 64K characters: a large table
    never becomes one string, and a small one hashes as it always has."""
    parts: list[str] = []

    def write(text: str) -> None:
        parts.append(text)
        if len(parts) >= 65536:
            digest.update("".join(parts).encode())
            parts.clear()

    _stream_repr(value, write)
    digest.update("".join(parts).encode())


def _stream_repr(value: Any, write: Callable[[str], None]) -> None:
    """A stable repr of `value` written piece by piece: sets and dicts sorted, at every depth."""
    kind = type(value)
    if kind in (set, frozenset):
        _stream_sequence(sorted(map(_stable_repr, value)), write, f"{kind.__name__}([", "])", repr)
    elif kind is dict:
        pairs = sorted((_stable_repr(k), _stable_repr(v)) for k, v in value.items())
        _stream_sequence(pairs, write, "dict([", "])", lambda pair: f"({pair[0]!r}, {pair[1]!r})")
    elif kind is list:
        _stream_sequence(value, write, "[", "]", repr if _all_simple(value) else _stable_repr)
    elif kind is tuple and not _all_simple(value):
        _stream_sequence(value, write, "(", ",)", _stable_repr)
    elif kind is tuple and len(value) > 1:  # repr(tuple), "(1, 2)", written item by item
        _stream_sequence(value, write, "(", ")", repr)
    else:
        write(repr(value))


def _stream_sequence(items: Iterable[Any], write: Callable[[str], None], start: str, end: str,
                     text: Callable[[Any], str]) -> None:
    write(start)
    for index, item in enumerate(items):
        write(f", {text(item)}" if index else text(item))
    write(end)


def _all_simple(items: Iterable[Any]) -> bool:
    return all(isinstance(v, _SIMPLE) for v in items)


def _stable_repr(value: Any) -> str:
    """repr with sets and dicts sorted, at every depth: string hashing (so set order) differs
    between processes. One writer (`_stream_repr`) makes both this text and the streamed digest."""
    parts: list[str] = []
    _stream_repr(value, parts.append)
    return "".join(parts)


def _is_user_code(obj: Any) -> bool:
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    return True if module is None else is_user_module(module)  # a module that is gone (exec'd code): hash it


def is_user_module(module: types.ModuleType) -> bool:
    """Whether a module is the user's code, not the standard library, an installed package or loopstack."""
    if module.__name__ == "loopstack" or module.__name__.startswith("loopstack."):
        return False
    path = getattr(module, "__file__", None)
    if path is None:
        return module.__name__ == "__main__"
    return not path.startswith(_LIBRARY_ROOTS)


def _version(module: types.ModuleType) -> str:
    return str(getattr(module, "__version__", ""))


__all__ = ["code_digest", "is_user_module", "value_digest"]
