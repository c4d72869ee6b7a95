"""Reading typed values out of parsed JSON, with one-line errors that name the file and the key.

Manifests are parsed once, completely, into frozen dataclasses (:mod:`fastdpr.common.integrity`,
:mod:`fastdpr.index.manifest`, :mod:`fastdpr.model.artifact`); nothing downstream indexes a raw dict. A
missing or mistyped key is then an error at load that says ``manifest.json: hnsw.ef_search is
missing``, instead of a ``KeyError`` in the middle of a search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from fastdpr.common.errors import FastDPRError


class Fields:
    """A JSON object being read: ``where`` is its dotted path inside the file (``""`` at the top)."""

    def __init__(self, data: Any, source: Path, error: type[FastDPRError], where: str = "") -> None:
        self.source = source
        self.error = error
        self.where = where
        if not isinstance(data, dict):
            self.fail(f"{where or 'the manifest'} must be an object, got {_kind(data)}")
        self.data: dict[str, Any] = data

    def fail(self, problem: str) -> NoReturn:
        """Raise the error type of this file with a one-line message."""
        raise self.error(f"{self.source}: {problem}")

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        """True when ``key`` is present and not null."""
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        """The value of a required key, whatever its type."""
        if key not in self.data:
            self.fail(f"{self._name(key)} is missing")
        return self.data[key]

    def obj(self, key: str) -> Fields:
        """A required nested object."""
        return Fields(self.raw(key), self.source, self.error, self._name(key))

    def optional_obj(self, key: str) -> Fields | None:
        """A nested object, or None when the key is absent or null."""
        return self.obj(key) if self.has(key) else None

    def string(self, key: str) -> str:
        """A required non-empty string."""
        value = self.raw(key)
        if not isinstance(value, str) or not value:
            self.fail(f"{self._name(key)} must be a non-empty string, got {_kind(value)}")
        return str(value)

    def optional_string(self, key: str) -> str | None:
        """A string, or None when absent or null."""
        return self.string(key) if self.has(key) else None

    def integer(self, key: str, minimum: int = 0) -> int:
        """A required integer ``>= minimum`` (``true``/``false`` are not integers here)."""
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"{self._name(key)} must be an integer >= {minimum}, got {_kind(value)}")
        return int(value)

    def number(self, key: str) -> float:
        """A required number."""
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{self._name(key)} must be a number, got {_kind(value)}")
        return float(value)

    def array(self, key: str) -> list[Any]:
        """A required array."""
        value = self.raw(key)
        if not isinstance(value, list):
            self.fail(f"{self._name(key)} must be an array, got {_kind(value)}")
        return list(value)

    def one_of(self, key: str, choices: tuple[str, ...]) -> str:
        """A required string among ``choices``."""
        value = self.string(key)
        if value not in choices:
            self.fail(f"{self._name(key)} must be one of {list(choices)}, got {value!r}")
        return value

    def item(self, key: str, index: int) -> Fields:
        """Element ``index`` of the array ``key``, as an object."""
        return Fields(self.array(key)[index], self.source, self.error, f"{self._name(key)}[{index}]")


def _kind(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else type(value).__name__
