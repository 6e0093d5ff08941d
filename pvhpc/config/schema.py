"""How site config keys are declared, and the reader that parses YAML against the declaration.

A ``Key`` is written once: its name, the check its value passes, its default and its help. Keys are
grouped in a ``Section`` (``service:``) or a ``Named`` section, whose entries each sit under a name
staff choose (``partitions.<name>``). The loader, its error messages and ``docs/site.example.yaml``
all come from these declarations (``keys.py``), so they cannot drift apart.

The reader remembers where each value came from, so every error names the file and the dotted key;
a key the declaration does not know is an error too, with the nearest known one as a hint: a misspelt
limit must not silently fall back to its default.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Iterable

from pvhpc.config import checks
from pvhpc.config.model import Range
from pvhpc.errors import PvhpcError


class ConfigError(PvhpcError):
    """A site config is wrong: ``source`` is the file, ``key`` the dotted key ("" for the file as a whole), which
    is also the error's ``field``."""

    def __init__(self, message: str, *, source: str, key: str = ""):
        super().__init__(message, field=key or None)
        self.source, self.key = source, key
        self.args = (f"{source}: {key}: {message}" if key else f"{source}: {message}",)


@dataclass
class Context:
    """What a computed default may look at: the sections read so far (``site``, by section name), the
    values read so far in this section (``values``, by key name), and the entry's name in a Named section."""
    site: dict[str, Any]
    values: dict[str, Any] = dataclass_field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class Derived:
    """A default computed when the config is read, from earlier values or from the machine.
    ``says`` tells a reader of the example file what it comes to."""
    compute: Callable[[Context], Any]
    says: str


@dataclass(frozen=True)
class Key:
    name: str
    check: Callable[[Any], Any]
    # As YAML would give it, and checked like a written value; a Derived; or None: left out, nothing is set.
    default: Any
    help: str
    field: str | tuple[str, ...] = ""   # the dataclass field(s) it fills; "" is the key's own name
    example: Any = None                 # shown (commented out) in the example file when there is no fixed default
    required: str = ""                  # why it must be written, for a key without a default

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field or self.name,) if isinstance(self.field, str) else self.field

    def default_for(self, ctx: Context) -> Any:
        return self.default.compute(ctx) if isinstance(self.default, Derived) else self.default

    def read(self, reader: "Reader", ctx: Context) -> Any:
        raw = reader.raw(self.name)
        if raw is None:
            if self.required:
                raise reader.error(self.name, f"is required: {self.required}")
            raw = self.default_for(ctx)
            if raw is None:
                return None
        return reader.checked(self.name, raw, self.check)


class RangeKey(Key):
    """A ``{default: N, max: M}`` pair, each bound passing ``check``; a bare value is the maximum and the
    default at once. Only ``max`` written: the default is the declared one, lowered to that maximum."""

    def read(self, reader: "Reader", ctx: Context) -> Range:
        raw = reader.raw(self.name)
        if raw is not None and not isinstance(raw, dict):
            value = reader.checked(self.name, raw, self.check)
            return Range(value, value)
        declared = self.default_for(ctx)
        sub = reader.section(self.name, ("default", "max"))

        def bound(name: str, fallback: int) -> int:
            written = sub.raw(name)
            return fallback if written is None else sub.checked(name, written, self.check)

        maximum = bound("max", self.check(declared["max"]))
        value = bound("default", min(self.check(declared["default"]), maximum))
        sub.finish()
        if value > maximum:
            raise sub.error("default", f"{value} is over max ({maximum})")
        return Range(value, maximum)


class Reader:
    """One mapping of the YAML, at dotted ``path``, whose keys may only be ``known`` (None: any)."""

    def __init__(self, source: str, path: str, data: Any, known: Iterable[str] | None):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"must be a mapping, not {type(data).__name__}", source=source,
                              key=path or "(top level)")
        self.source, self.path, self.data = source, path, data
        self.known = None if known is None else tuple(known)

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=self.key(name))

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        return self.data.get(name)

    def checked(self, name: str, raw: Any, check: Callable[[Any], Any]) -> Any:
        try:
            return check(raw)
        except (ValueError, TypeError) as e:
            # checks.each marks which item of a list was wrong (an index), a check of a small mapping which
            # of its keys (a name).
            index = getattr(e, "index", None)
            where = name if index is None else f"{name}.{index}" if isinstance(index, str) else f"{name}[{index}]"
            raise self.error(where, str(e)) from None

    def section(self, name: Any, known: Iterable[str] | None) -> "Reader":
        return Reader(self.source, self.key(str(name)), self.data.get(name), known)

    def finish(self) -> None:
        """Refuse the first key that is not declared here."""
        if self.known is None:
            return
        for name in self.data:
            if name not in self.known:
                hint = difflib.get_close_matches(str(name), sorted(self.known), n=1)
                raise self.error(str(name), "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


# A cross-key rule: run on a section once its keys are read, with the section's reader (to name keys),
# the dataclass just built and the sections read before it. It raises ConfigError or returns nothing.
Rule = Callable[[Reader, Any, dict], None]


def _build(model: type, keys: tuple[Key, ...], reader: Reader, ctx: Context, **fields: Any) -> Any:
    for key in keys:
        value = key.read(reader, ctx)
        ctx.values[key.name] = value
        fields.update(zip(key.fields, value) if len(key.fields) > 1 else [(key.fields[0], value)])
    return model(**fields)


@dataclass(frozen=True)
class Section:
    name: str
    model: type                  # the dataclass its values become
    keys: tuple[Key, ...]
    help: str
    optional: bool = False       # read only when written (ssh:); otherwise None

    def read(self, parent: Reader, site: dict, rule: Rule | None = None) -> Any:
        reader = parent.section(self.name, [k.name for k in self.keys])
        config = _build(self.model, self.keys, reader, Context(site))
        if rule:
            rule(reader, config, site)
        reader.finish()
        return config


@dataclass(frozen=True)
class Named:
    """Entries under names staff choose (``partitions.gpu``), each with the same keys."""
    name: str
    model: type                  # the dataclass each entry becomes; its ``name`` field is the entry's name
    keys: tuple[Key, ...]
    help: str
    needed: str                  # what the error says when there is no entry
    # Entries shown in the example file, by name, with the values written there; the first shows every key.
    examples: dict[str, dict[str, Any]]
    optional = False

    def read(self, parent: Reader, site: dict, rule: Rule | None = None) -> dict[str, Any]:
        entries = parent.section(self.name, None)
        if not entries.data:
            raise parent.error(self.name, self.needed)
        found: dict[str, Any] = {}
        for written in entries.data:
            name = str(written)
            reader = entries.section(written, [k.name for k in self.keys])
            try:
                checks.name(name)
            except ValueError as e:
                raise entries.error(name, str(e)) from None
            config = _build(self.model, self.keys, reader, Context(site, name=name), name=name)
            if rule:
                rule(reader, config, site)
            reader.finish()
            found[name] = config
        return found
