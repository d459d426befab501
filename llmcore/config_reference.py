"""The configuration reference (docs/config.md), generated from the pydantic models in llmcore/config.py, so that
every key, type, default and constraint it lists is the code's.

    python -m llmcore.config_reference --write     # regenerate docs/config.md
    python -m llmcore.config_reference             # print it

tests/test_config_reference.py fails when docs/config.md differs from what this module generates.
"""

from __future__ import annotations

import argparse
import enum
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from llmcore import config as config_module
from llmcore.config import PipelineConfig
from llmcore.stage import OUTPUT_ONLY, POLICY

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
COMMAND = "python -m llmcore.config_reference --write"
REQUIRED = object()  # the default of a field that has none

HEADER = f"""# Configuration reference

<!-- Generated from llmcore/config.py by `{COMMAND}`: do not edit by hand. -->

One YAML file describes a run (the bundled example: `configs/tiny.yaml`); the pydantic models in
`llmcore/config.py` validate it and hold every default listed here. Unknown keys are errors, relative
paths are relative to the config file, and `llmpipe validate CONFIG` checks a file (every problem
with its line, field and fix) without running anything.

Keys are dotted paths from the top of the file; `[]` marks a list item. A section whose default is
`null` is off unless the file sets it. "required" means the file must give a value.
"""


@dataclass
class SectionDoc:
    """One pydantic model at one place in the config tree."""

    path: str
    model: type[BaseModel]
    info: FieldInfo | None  # the field holding it (None for the root)
    optional: bool  # `X | None`: absent = off
    listed: bool  # a list of them
    defaults: dict[str, Any]  # field name -> default here (a parent's default instance can change the class's)
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    children: list[SectionDoc] = field(default_factory=list)
    same_as: SectionDoc | None = None  # an earlier section of the same model, with the same defaults
    first: SectionDoc | None = None  # the first section of the same model, when its defaults differ
    filled: bool = False  # its parent has a "before" model validator, which may fill it in


def _keyed(info: FieldInfo) -> str:
    """How a field enters stage keys, when it does not (llmcore.stage.OUTPUT_ONLY and POLICY)."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if extra == POLICY:
        return "*Not in keys: chooses what a grown corpus reuses.* "
    if extra == OUTPUT_ONLY:
        return "*Not in keys: changes how, not what; changing it reruns nothing.* "
    return ""


def _annotation(model: type[BaseModel], name: str) -> Any:
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, (str, typing.ForwardRef)):  # a model defined after the one using it
        annotation = typing.get_type_hints(model, vars(config_module))[name]
    return annotation


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    return typing.get_args(annotation) if origin in (Union, types.UnionType) else (annotation,)


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool, bool]:
    """(the model in `annotation`, optional, a list of it): `M`, `M | None`, `list[M]`; else (None, ...)."""
    args = _union_args(annotation)
    optional = type(None) in args
    rest = [a for a in args if a is not type(None)]
    if len(rest) != 1:
        return None, optional, False
    inner = rest[0]
    if typing.get_origin(inner) is list and typing.get_args(inner):
        item = typing.get_args(inner)[0]
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, optional, True
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner, optional, False
    return None, optional, False


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return REQUIRED if info.default is PydanticUndefined else info.default


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(_value(a) for a in args)
    if origin in (list, tuple, dict, set):
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(_value(m.value) for m in annotation)
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _value(value: Any) -> str:
    """A value as it would be written in the YAML file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _value(value.value)
    if isinstance(value, BaseModel):
        return _value(value.model_dump())
    if isinstance(value, (list, tuple, set)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return repr(value)
    return str(value)


_CONSTRAINTS = [("gt", "> {}"), ("ge", ">= {}"), ("lt", "< {}"), ("le", "<= {}"), ("multiple_of", "a multiple of {}"),
                ("min_length", "at least {} {}"), ("max_length", "at most {} {}"), ("pattern", "matches `{}`")]


def _constraints(info: FieldInfo, annotation: Any) -> str:
    text_like = any(a is str for a in _union_args(annotation))
    found = []
    for item in info.metadata:
        for attr, text in _CONSTRAINTS:
            value = getattr(item, attr, None)
            if value is not None:
                unit = "characters" if text_like else "items" if value != 1 else "item"
                found.append(text.format(value if attr == "pattern" else _value(value), unit))
    return ", ".join(found)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _build(section: SectionDoc) -> None:
    """Fill section.rows (its plain fields) and section.children (its nested models), the whole tree."""
    for name, info in section.model.model_fields.items():
        annotation = _annotation(section.model, name)
        nested, optional, listed = _model_in(annotation)
        default = section.defaults[name]
        path = f"{section.path}.{name}" if section.path else name
        if nested is not None:
            if isinstance(default, BaseModel):
                defaults = {n: getattr(default, n) for n in nested.model_fields}
            else:
                defaults = {n: _default(f) for n, f in nested.model_fields.items()}
            child = SectionDoc(path + ("[]" if listed else ""), nested, info, optional, listed, defaults, filled=_fills(section.model))
            section.children.append(child)
            _build(child)
            continue
        shown = "required" if default is REQUIRED else _code(_value(default))
        section.rows.append((f"`{path}`", _code(_type_name(annotation)), shown, _constraints(info, annotation),
                             _keyed(info) + (info.description or "")))


def _fills(model: type[BaseModel]) -> bool:
    validators = model.__pydantic_decorators__.model_validators.values()
    return any(v.info.mode == "before" for v in validators)


def _link(root: SectionDoc) -> None:
    """Breadth first, so the shallowest place of a model is where its keys are listed: a later place with the same
    defaults refers to an earlier one (and its subsections are left out); one with other defaults names its first."""
    seen: dict[type[BaseModel], list[SectionDoc]] = {}
    queue = [root]
    while queue:
        section = queue.pop(0)
        earlier = seen.setdefault(section.model, [])
        section.same_as = next((other for other in earlier if _flat(other) == _flat(section)), None)
        if section.same_as is not None:
            continue
        section.first = earlier[0] if earlier else None
        earlier.append(section)
        queue.extend(section.children)


def _flat(section: SectionDoc) -> dict[str, Any]:
    """Every leaf default under a section, by path relative to it."""
    out: dict[str, Any] = {}
    for name in section.model.model_fields:
        value = section.defaults[name]
        out[name] = value.model_dump() if isinstance(value, BaseModel) else value
    return out


def _differences(section: SectionDoc, other: SectionDoc) -> list[str]:
    mine, theirs = _flat(section), _flat(other)
    return [f"`{name}: {_value(mine[name])}`" for name in mine if mine[name] != theirs.get(name)]


def _render(section: SectionDoc, out: list[str]) -> None:
    doc = (section.model.__dict__.get("__doc__") or "").strip()
    out.append(f"## {section.path or 'Top level'}\n")
    notes = []
    if section.info is not None and section.info.description:
        notes.append(section.info.description[0].upper() + section.info.description[1:] + ".")
    if doc:
        notes.append(" ".join(doc.split()))
    if section.listed:
        notes.append("A list: each item has the keys below." if section.same_as is None else "A list of such items.")
    limits = _constraints(section.info, section.info.annotation) if section.info is not None else ""
    if limits:
        notes.append(f"Constraints: {limits}.")
    if section.optional:
        notes.append("Optional: off (null) unless the file sets it.")
    elif section.info is not None and section.info.is_required() and not section.listed and not section.filled:
        notes.append("Required.")
    if section.same_as is not None:
        notes.append(f"Same keys and defaults as [`{section.same_as.path}`](#{_anchor(section.same_as.path)}).")
    elif section.first is not None:
        diffs = _differences(section, section.first)
        notes.append(f"The keys of [`{section.first.path}`](#{_anchor(section.first.path)})"
                     + (f"; defaults that differ: {', '.join(diffs)}." if diffs else "."))
    if notes:
        out.append(" ".join(notes) + "\n")
    if section.rows:
        out.append("| key | type | default | constraints | description |")
        out.append("|---|---|---|---|---|")
        out.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in section.rows)
        out.append("")
    if section.same_as is None:
        for child in section.children:
            _render(child, out)


def _anchor(path: str) -> str:
    """GitHub's anchor for a heading `path`: lower case, punctuation other than - and _ dropped."""
    return "".join(c for c in path.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def models(root: type[BaseModel] = PipelineConfig) -> list[type[BaseModel]]:
    """Every model reachable from `root` (its sections, their sections, ...), each once, root first."""
    found = [root]
    for model in found:
        for name in model.model_fields:
            nested = _model_in(_annotation(model, name))[0]
            if nested is not None and nested not in found:
                found.append(nested)
    return found


def reference(root: type[BaseModel] = PipelineConfig) -> str:
    """The markdown of docs/config.md: every section and key of `root`, depth first, with type, default,
    constraints and description."""
    top = SectionDoc("", root, None, False, False, {n: _default(f) for n, f in root.model_fields.items()})
    _build(top)
    _link(top)
    out = [HEADER]
    contents = []

    def toc(section: SectionDoc, depth: int) -> None:
        if section.path:
            contents.append(f"{'  ' * depth}- [`{section.path}`](#{_anchor(section.path)})")
        if section.same_as is None:
            for child in section.children:
                toc(child, depth + (1 if section.path else 0))

    toc(top, 0)
    out.append("Sections:\n")
    out.extend(contents)
    out.append("")
    _render(top, out)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcore.config_reference",
                                     description="Print the configuration reference generated from llmcore/config.py.")
    parser.add_argument("--write", action="store_true", help=f"write {DOC.relative_to(DOC.parents[1])} instead of printing")
    args = parser.parse_args(argv)
    text = reference()
    if args.write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
