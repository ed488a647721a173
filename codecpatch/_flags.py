"""Command-line flags generated from the recipe model: each flag overrides one recipe key (``--budget`` is
``patchify.budget``), its help and default come from the recipe field, so a field added to the recipe is a
flag of every command that processes video without being declared again.

A command takes the flags of some recipe sections (``recipe_flags(...)``); its handler turns the values the
user gave into ``{"section.key": value}`` overrides with ``overrides(params)`` and passes them, with
``FLAG_NAMES``, to ``codecpatch.pipeline.load_recipe``.

The flags are built from ``codecpatch._recipe_fields``, a table of the recipe's fields written from the model
by ``python -m codecpatch._flags`` (``recipe_table()``), not from the model itself: importing the model
(pydantic) would cost every command ~80 ms of start-up, ``--help`` and ``patchify CLIP`` included. After
changing a recipe field, run that command; tests/test_cli_flags.py fails while the table and the model differ.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path

import click

from ._recipe_fields import SECTIONS

#: Flag spellings that differ from the rule below (kept from earlier releases).
_NAMES = {"execution.deadline_s": "--deadline", "encoder.name": "--encoder", "encoder.xray": "--xray", "compress": "--compress",
          "clips.seconds": "--clip-seconds", "clips.frames": "--clip-frames"}
#: Sections whose keys become flags with a prefix (``encoder.dim`` -> ``--encoder-dim``); the others' keys are bare.
_PREFIXED = {"encoder": "encoder", "clips": "clip"}
_SEPARATOR = "__"


@dataclass(frozen=True)
class RecipeFlag:
    """One flag: the recipe key it overrides, its spelling and its click parameter name."""

    key: str
    flag: str
    param: str


def _flag_name(key: str) -> str:
    if key in _NAMES:
        return _NAMES[key]
    section, _, name = key.partition(".")
    prefix = _PREFIXED.get(section)
    return "--" + (f"{prefix}-{name}" if prefix else name).replace("_", "-")


#: Recipe section (or the top-level key ``compress``) -> its fields, in the model's order.
_SECTIONS = dict(SECTIONS)


def _fields(section: str) -> tuple:
    """(recipe key, kind, default, description) of each field of one section (or the top-level key ``compress``)."""
    return _SECTIONS[section]


class _Budget(click.ParamType):
    """A budget in the Budget grammar: 0.125 / 12.5% (a fraction), 8f (frames' worth), 1500t (tokens)."""

    name = "budget"

    def convert(self, value, param, ctx):
        from .patchify import Budget

        try:
            return str(Budget.parse(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class _Size(click.ParamType):
    """WIDTHxHEIGHT, e.g. 320x240."""

    name = "WxH"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        width, _, height = str(value).lower().partition("x")
        if not (width.isdigit() and height.isdigit()):
            self.fail(f"{value!r}: expected WIDTHxHEIGHT, e.g. 320x240", param, ctx)
        return int(width), int(height)


class _Workers(click.ParamType):
    """``auto`` or a count >= 0."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        if str(value).isdigit():
            return int(value)
        self.fail(f"{value!r}: expected auto or a whole number >= 0", param, ctx)


class _List(click.ParamType):
    """Comma-separated values, e.g. .mp4,.mkv."""

    name = "A,B,..."

    def convert(self, value, param, ctx):
        return value if isinstance(value, list) else [part.strip() for part in str(value).split(",") if part.strip()]


class _IntChoice(click.Choice):
    """One of a few whole numbers (e.g. a block size of 4, 8 or 16)."""

    def convert(self, value, param, ctx):
        return int(super().convert(str(value), param, ctx))


BUDGET = _Budget()
_TYPES = {"patchify.budget": BUDGET, "patchify.exact_size": _Size(), "execution.workers": _Workers(), "inputs.extensions": _List(),
          "encoder.name": click.STRING}


def _click_type(key: str, kind):
    if key in _TYPES:
        return _TYPES[key]
    if isinstance(kind, tuple):  # a Literal's choices
        return (_IntChoice if all(isinstance(c, int) for c in kind) else click.Choice)([str(c) for c in kind])
    return {"int": click.INT, "float": click.FLOAT}.get(kind, click.STRING)


def _option(key: str, kind, default, description: str) -> tuple[RecipeFlag, typing.Callable]:
    flag = _flag_name(key)
    param = key.replace(".", _SEPARATOR)
    shown = "" if default in (None, "") else f"default {default}; "
    help_text = f"{description.rstrip('.')} ({shown}recipe: {key})".replace("( ", "(").lstrip(" ")
    if kind == "bool":
        option = click.option(f"{flag}/--no-{flag[2:]}", param, default=None, help=help_text)
    else:
        option = click.option(flag, param, type=_click_type(key, kind), default=None, help=help_text)
    return RecipeFlag(key, flag, param), option


def _all_flags() -> dict[str, tuple[RecipeFlag, typing.Callable]]:
    return {key: _option(key, kind, default, description)
            for _section, fields in SECTIONS for key, kind, default, description in fields}


_FLAGS = _all_flags()
#: The flag of each recipe key ({"patchify.budget": "--budget", ...}): bad values are reported under it.
FLAG_NAMES = {key: flag.flag for key, (flag, _) in _FLAGS.items()}


def recipe_flags(*sections: str, exclude: tuple[str, ...] = ()):
    """A decorator adding one flag per key of ``sections`` (e.g. "patchify", "clips", "compress"), except
    the keys in ``exclude``."""

    def decorate(command):
        for section in reversed(sections):
            for key, *_field in reversed(_fields(section)):
                if key not in exclude:
                    command = _FLAGS[key][1](command)
        return command

    return decorate


def overrides(params: dict) -> dict:
    """Take the recipe flags out of a click handler's ``params`` (in place) and return them as
    {"section.key": value} for the ones the user gave."""
    given = {}
    for param in [p for p in params if _SEPARATOR in p or p == "compress"]:
        value = params.pop(param)
        if value is not None:
            given[param.replace(_SEPARATOR, ".")] = value
    return given


def flags_of(*sections: str) -> list[RecipeFlag]:
    """The flags ``recipe_flags(*sections)`` adds (for tests and docs)."""
    return [_FLAGS[key][0] for section in sections for key, *_field in _fields(section)]


# -- the table, from the model ----------------------------------------------------------------------------

def _unwrap(annotation):
    """The annotation without ``| None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        return parts[0] if len(parts) == 1 else annotation
    return annotation


def _kind(annotation) -> str | tuple:
    """What a flag needs of a field's type: "bool" (an on/off flag), "int", "float", "str" (any other type is
    given as text), or the choices of a Literal."""
    annotation = _unwrap(annotation)
    if annotation is bool:
        return "bool"
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return {int: "int", float: "float"}.get(annotation, "str")


def recipe_table() -> tuple:
    """The recipe's fields as ``codecpatch._recipe_fields.SECTIONS`` holds them, read from the model:
    ((section, ((key, kind, default, description), ...)), ...), sections and keys in the model's order."""
    from .pipeline import Recipe

    table = []
    for section, field in Recipe.model_fields.items():
        fields = [(section, field)] if section == "compress" else \
            [(f"{section}.{name}", sub) for name, sub in field.annotation.model_fields.items()]
        table.append((section, tuple((key, _kind(f.annotation), f.default, f.description or "") for key, f in fields)))
    return tuple(table)


_HEADER = '''"""The recipe's fields as the command line needs them (key, kind, default, description), so that building the
flags does not import the recipe model (pydantic). WRITTEN by ``python -m codecpatch._flags`` from
codecpatch.pipeline.Recipe: do not edit; change the model and run it again (tests/test_cli_flags.py fails
while the two differ)."""

# fmt: off
SECTIONS = (
'''


def render_table(table: tuple) -> str:
    """The source of ``codecpatch/_recipe_fields.py`` holding ``table`` (one field per line)."""
    lines = [_HEADER.rstrip("\n")]
    for section, fields in table:
        lines.append(f"    ({section!r}, (")
        lines += [f"        {field!r}," for field in fields]
        lines.append("    )),")
    lines.append(")")
    return "\n".join(lines) + "\n"


def write_table() -> Path:
    """Write ``codecpatch/_recipe_fields.py`` from the model; returns its path."""
    path = Path(__file__).with_name("_recipe_fields.py")
    path.write_text(render_table(recipe_table()))
    return path


if __name__ == "__main__":
    print(f"wrote {write_table()}")
