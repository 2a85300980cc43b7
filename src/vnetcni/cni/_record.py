"""Tiny value-object bases used instead of `dataclasses`.

`dataclasses` pulls in `inspect` (and with it `ast`, `dis`, `tokenize`) and generates code with
`exec` for every class: about 20 ms of a plugin's start-up, paid on every pod event. These two
bases give the same equality, repr and (for frozen records) immutability and hashing from
`__slots__`; each record writes its own `__init__`, which also documents its fields.
"""

from __future__ import annotations


class Record:
    """Equality and repr over `__slots__`, like a dataclass."""

    __slots__: tuple[str, ...] = ()
    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, as a non-frozen dataclass

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class FrozenRecord(Record):
    """A Record whose fields cannot be reassigned after __init__; hashable when its values are."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of frozen {type(self).__name__}")

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self._values())

    def __reduce__(self):
        # copy/pickle would restore slots with setattr, which a frozen record refuses; rebuild
        # through __init__ instead (each subclass lists its __init__ parameters in slot order).
        return (type(self), self._values())

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: object):
        """A copy with some fields changed (dataclasses.replace for these records)."""
        values = {name: getattr(self, name) for name in self.__slots__}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(sorted(unknown))}")
        values.update(changes)
        return type(self)(**values)
