"""State stores and timers, for processors (world ``processor``) only.

    from weir_guest import state, timers

Keys and values are str (UTF-8) or bytes. A failed call raises an exception,
which rejects the record being processed.
"""

from __future__ import annotations

import json as _json
from typing import Any, List, Optional, Tuple, Union

from wit_world.imports import state as _state
from wit_world.imports import timers as _timers

Key = Union[str, bytes]


def _b(k: Key) -> bytes:
    return k.encode("utf-8") if isinstance(k, str) else bytes(k)


def _call(store: str, f: Any) -> Any:
    try:
        return f()
    except Exception as e:  # componentize_py_types.Err(StateError_...)
        v = getattr(e, "value", None)
        if type(v).__name__ == "StateError_NoSuchStore":
            raise RuntimeError(f"no state store named `{v.value}`: declare it in the pipeline file") from None
        if type(v).__name__ == "StateError_Io":
            raise RuntimeError(f"state store `{store}`: {v.value}") from None
        raise


def get(store: str, key: Key) -> Optional[bytes]:
    """The value of ``key`` in ``store``, or None."""
    return _call(store, lambda: _state.get(store, _b(key)))


def put(store: str, key: Key, value: Key) -> None:
    """Sets ``key`` in ``store``."""
    _call(store, lambda: _state.put(store, _b(key), _b(value)))


def delete(store: str, key: Key) -> None:
    """Removes ``key`` from ``store``."""
    _call(store, lambda: _state.delete(store, _b(key)))


def range(store: str, start: Optional[Key], end: Optional[Key], limit: int) -> List[Tuple[bytes, bytes]]:  # noqa: A001
    """Up to ``limit`` (key, value) entries with start <= key < end (None: no bound), in key order."""
    return _call(store, lambda: _state.range(store, None if start is None else _b(start),
                                             None if end is None else _b(end), limit))


def get_json(store: str, key: Key) -> Any:
    """The value of ``key`` parsed from JSON, or None."""
    v = get(store, key)
    return None if v is None else _json.loads(v)


def put_json(store: str, key: Key, value: Any) -> None:
    """Sets ``key`` to ``value`` as JSON."""
    put(store, key, _json.dumps(value, separators=(",", ":")))


class timers:
    """Timers: when one fires the host calls the processor's on_timer(time, tag).
    A tag is one timer per clock: setting it again moves it."""

    @staticmethod
    def at_event_time(time: int, tag: Key) -> None:
        _timers.schedule(_timers.Clock.EVENT_TIME, int(time), _b(tag))

    @staticmethod
    def at_wall_clock(time: int, tag: Key) -> None:
        _timers.schedule(_timers.Clock.WALL_CLOCK, int(time), _b(tag))

    @staticmethod
    def cancel_event_time(tag: Key) -> None:
        _timers.cancel(_timers.Clock.EVENT_TIME, _b(tag))

    @staticmethod
    def cancel_wall_clock(tag: Key) -> None:
        _timers.cancel(_timers.Clock.WALL_CLOCK, _b(tag))
