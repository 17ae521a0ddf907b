"""The base of every bus event: a kind, a version, an encoding that only fails as EnvelopeDecodeError (pure).

Owns: Event (what the bus carries between steps), its wire shape
`{"kind": ..., "version": ..., "attempt": ..., "data": {...}}`, Retried (the base of the events that
count their retries themselves, in `tries`), and the registry of kinds that decode() reads back.
Does not: name queues (hub.topology), choose handlers (pipelines.definitions), or publish (hub.bus).

Rule 1: an event carries references and ids, never a payload or health data (claim check).
Rule 2: decoding raises nothing but EnvelopeDecodeError: a message that is not an event of a known
kind and version is dead-lettered, never retried.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Self, TypeVar

from hub.errors import EnvelopeDecodeError


class Event(ABC):
    """One step's news for the next: `kind` names it on the wire, `version` its data's shape.

    `attempt` counts deliberate retries (a TransientError in its handler); `event_id` names it in the
    logs and is what a handler dedupes on (a submission id, a notice id)."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1

    @property
    @abstractmethod
    def event_id(self) -> str: ...

    @property
    @abstractmethod
    def attempt(self) -> int: ...

    @abstractmethod
    def next_attempt(self) -> Self: ...

    @abstractmethod
    def data(self) -> dict[str, Any]:
        """The event's own fields, JSON-safe."""

    @classmethod
    @abstractmethod
    def from_data(cls, data: Mapping[str, Any], *, attempt: int) -> Self:
        """Read back what data() wrote (may raise KeyError, TypeError, ValueError: decode() maps them)."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "attempt": self.attempt, "data": self.data()}


@dataclass(frozen=True, slots=True)
class Retried(Event):
    """An event whose retries are its own field, `tries` (keyword-only, 0 when first published): the
    wire's `attempt` is written from it and read back into it (from_data(..., attempt) passes it on)."""

    tries: int = field(default=0, kw_only=True)

    @property
    def attempt(self) -> int:
        return self.tries

    def next_attempt(self) -> Self:
        return replace(self, tries=self.tries + 1)


#: kind -> event class, filled by @registered (hub.events imports every module that declares one)
REGISTRY: dict[str, type[Event]] = {}
#: how a message written before events had kinds is read (the previous release's envelopes)
LEGACY: list[Callable[[Mapping[str, Any]], Event]] = []


E = TypeVar("E", bound=type[Event])


def registered(cls: E) -> E:
    """Class decorator: make `cls` decodable by its kind (one class per kind)."""
    if cls.kind in REGISTRY and REGISTRY[cls.kind] is not cls:
        raise ValueError(f"event kind {cls.kind!r} is declared twice")
    REGISTRY[cls.kind] = cls
    return cls


def decode(data: Mapping[str, Any]) -> Event:
    """A decoded message -> its Event; EnvelopeDecodeError for an unknown kind or version, or bad data."""
    try:
        if "kind" not in data and LEGACY:
            return LEGACY[0](data)
        cls = REGISTRY.get(str(data["kind"]))
        if cls is None:
            raise ValueError(f"unknown event kind {data['kind']!r}")
        if int(data["version"]) != cls.version:
            raise ValueError(f"unsupported {cls.kind} version {data['version']!r}")
        body = data["data"]
        if not isinstance(body, Mapping):
            raise TypeError("event data is not an object")
        return cls.from_data(body, attempt=int(data.get("attempt", 0)))
    except EnvelopeDecodeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EnvelopeDecodeError(f"unreadable event: {exc}") from exc
