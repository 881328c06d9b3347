"""Where configuration values come from, and how a problem with one is told.

`mailmux.config` says what the settings are; this module gets the raw values
to it and turns its complaints into lines an operator can act on. It is
separate because none of it depends on which settings exist: reading YAML
with file:line:column errors, ``${NAME}`` references, ``MAILMUX_`` overrides
and the wording of pydantic's errors work the same for any model.

- YAML duplicate keys are errors: the later one would silently win.
- ``MAILMUX_A__B=value`` sets one value, creating sections as needed;
  the variables in `CLI_ENV` configure the `mailmux` command instead.
- ``${NAME}`` and ``${NAME:-default}`` in the file's strings are replaced
  from the environment (``$${`` is a literal ``${``); override values are
  taken literally.
- An error line starts with the dotted path of the value, names the
  override behind it, and never shows a secret's value.

The readers append a problem to the caller's `errors` list rather than
raising: `ConfigError` belongs to `mailmux.config`, which imports this module.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

ENV_PREFIX = "MAILMUX_"
ENV_LEVEL_SEPARATOR = "__"
# MAILMUX_ variables that configure the `mailmux` command itself, not the config file.
CLI_ENV = frozenset(
    {"MAILMUX_URL", "MAILMUX_SMTP", "MAILMUX_API_KEY", "MAILMUX_LOG_LEVEL", "MAILMUX_LOG_FORMAT"}
)

Location = tuple[str | int, ...]  # a location in the config tree: ("vendors", "primary", "weight")


class Violations(ValueError):
    """Rule breaks found by one validator, each at a dotted path below the validated value.

    Raising this instead of a plain ValueError lets an error about a vendor's
    api_key be reported at `vendors.x.api_key` rather than at `vendors.x`.
    """

    def __init__(self, *items: tuple[str, str]) -> None:
        super().__init__("; ".join(message for _, message in items))
        self.items: list[tuple[Location, str]] = [
            (tuple(below.split(".")), message) for below, message in items
        ]


def read_file(path: Path, errors: list[str]) -> str | None:
    """The file's text, or None with the reason appended to `errors`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        errors.append(f"{path}: no such file")
    except UnicodeDecodeError as err:
        errors.append(f"{path}: not UTF-8 text (byte {err.start})")
    except OSError as err:
        errors.append(f"{path}: cannot read ({err.strerror or err})")
    return None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: the later one would silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str, errors: list[str]) -> dict[Any, Any] | None:
    """The mapping of settings in `text`, or None with the reason appended to `errors`."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # safe: a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        context = err.context_mark
        within = f" ({err.context} on line {context.line + 1})" if err.context and context else ""
        errors.append(f"{where}: {err.problem or err}{within}")
        return None
    except yaml.YAMLError as err:
        errors.append(f"{source}: {err}")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        errors.append(f"{source}: the top level must be a mapping of settings")
        return None
    return data


class _Override(str):
    """A value from a MAILMUX_ variable: taken literally, never substituted."""

    __slots__ = ()


def apply_overrides(
    raw: dict[Any, Any], env: Mapping[str, str], errors: list[str]
) -> dict[Location, str]:
    """Set each MAILMUX_A__B value in `raw`, creating sections as needed.

    Returns where each override landed, so a validation error can name the
    variable that caused it.
    """
    origins: dict[Location, str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in CLI_ENV:
            continue
        keys = name.removeprefix(ENV_PREFIX).lower().split(ENV_LEVEL_SEPARATOR)
        if not all(keys):
            errors.append(f"{name}: empty level (levels are separated by a double underscore)")
            continue
        section = raw
        for depth, key in enumerate(keys[:-1]):
            if section.get(key) is None:
                section[key] = {}
            if not isinstance(section[key], dict):
                at = _dotted(tuple(keys[: depth + 1]))
                errors.append(f"{name}: {at} is not a section")
                break
            section = section[key]
        else:
            section[keys[-1]] = _Override(env[name])
            origins[tuple(keys)] = name
    return origins


_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)(?P<end>\})?")
_REFERENCE_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def substitute(
    node: object, at: Location, env: Mapping[str, str], errors: list[str], unresolved: set[Location]
) -> object:
    """A copy of `node` with ${NAME} references in its strings replaced."""
    if isinstance(node, _Override):
        return str(node)
    if isinstance(node, dict):
        return {k: substitute(v, (*at, k), env, errors, unresolved) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, (*at, i), env, errors, unresolved) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group("body")
        parsed = _REFERENCE_BODY.fullmatch(body)
        problem = None
        if match.group("end") is None:
            problem = f"${{{body} at {_dotted(at)}: no closing }}"
        elif parsed is None:
            problem = (
                f"${{{body}}} at {_dotted(at)}: not a reference; write ${{NAME}} or "
                f"${{NAME:-default}}, or $${{ for a literal ${{"
            )
        else:
            value = env.get(parsed["name"])
            if parsed["default"] is not None and not value:  # as in the shell: unset or empty
                return str(parsed["default"])
            if value is not None:
                return value
            problem = f"${{{parsed['name']}}} at {_dotted(at)}: environment variable is not set"
        errors.append(problem)
        unresolved.add(at)
        return match.group(0)

    return _REFERENCE.sub(replace, node)


# ---------------------------------------------------------------- error lines

_MESSAGES = {
    "missing": "required",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be ≥ {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be ≤ {le}",
    "finite_number": "must be a finite number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}
_NO_INPUT = frozenset({"missing", "string_too_short"})
# Their values never reach a log line (`url`: a notify webhook's URL is its credential).
_SECRETS = frozenset({"api_key", "api_keys", "key", "store", "url"})


def error_lines(
    err: ValidationError,
    origins: Mapping[Location, str],
    unresolved: set[Location],
    root: type[BaseModel],
) -> list[str]:
    """Pydantic's errors as `path: message` lines, naming the override behind a value.

    `root` is the model that was validated: an unknown key is answered with the
    keys it accepts at that place.
    """
    lines = []
    for detail in err.errors():
        for location, message in _describe(detail, root):
            if any(location[: len(bad)] == bad for bad in unresolved):
                continue  # already reported as the missing variable behind it
            origin = next((name for at, name in origins.items() if location[: len(at)] == at), None)
            suffix = f" (from {origin})" if origin else ""
            lines.append(f"{_dotted(location)}: {message}{suffix}")
    return lines


def _describe(detail: ErrorDetails, root: type[BaseModel]) -> list[tuple[Location, str]]:
    """One pydantic error → (path, message) pairs in mailmux's words."""
    location: Location = tuple(detail["loc"])
    if location and location[-1] == "[key]":
        location = location[:-1]
    kind = detail["type"]
    context = detail.get("ctx", {})
    if kind == "value_error":
        cause = context.get("error")
        if isinstance(cause, Violations):
            return [((*location, *below), message) for below, message in cause.items]
        return [(location, str(cause))]
    if kind == "extra_forbidden":
        return [(location, _unknown_key(location, root))]
    template = _MESSAGES.get(kind)
    if template is None:
        return [(location, detail["msg"])]
    message = template.format(**{k: show_value(v) for k, v in context.items()})
    if kind not in _NO_INPUT and not _SECRETS.intersection(map(str, location)):
        message += f" (got {show_value(detail['input'])})"
    return [(location, message)]


def _unknown_key(location: Location, root: type[BaseModel]) -> str:
    known = _keys_at(location[:-1], root)
    if not known:
        return "unknown key"
    close = difflib.get_close_matches(str(location[-1]), known, n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key (known keys: {', '.join(known)})"


def _keys_at(location: Location, root: type[BaseModel]) -> list[str]:
    """The keys a model accepts at `location` below `root`, following a mapping's keys (such
    as vendor names) into the model of its values."""
    model = root
    steps = iter(location)
    for step in steps:
        field = model.model_fields.get(str(step))
        if field is None:
            return []
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        inner = [
            a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if inner:
            next(steps, None)  # the mapping's key (e.g. a vendor name) or the list's index
            model = inner[-1]
            continue
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def show_value(value: object) -> str:
    """A value as an operator would write it in the file."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(location: Location) -> str:
    text = ""
    for step in location:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else str(step)
    return text or "(top level)"
