"""weir-guest for Python: write Weir stream functions as one plain function
per record.

This package implements the packed batch encoding of wit/functions.wit
(decode the record batch, call your function once per record, encode the
result list), so you never see it::

    import weir_guest as weir

    @weir.map
    def route(r: weir.Record):
        return weir.Output.forward(r).to("high")

`@weir.map` (and `@weir.aggregate`, `@weir.join`, `@weir.processor`) puts the
class that componentize-py exports (`Mapping`, ...) into your module. Build it
with guest-sdk/python/build.sh (see docs/guide-python.md).
"""

from __future__ import annotations

import json as _json
import struct
import sys
from typing import Any, Callable, List, Optional, Tuple, Union

__all__ = [
    "Record",
    "Output",
    "Reject",
    "Window",
    "Pair",
    "map",
    "aggregate",
    "join",
    "processor",
    "config",
    "log",
]

_NONE = 0xFFFFFFFF
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_REC_HEAD = struct.Struct("<qqI")

Bytes = Union[bytes, bytearray, memoryview]


class Reject(Exception):
    """Raised by a function to reject the record: it goes to the dead-letter
    output with this message."""


def message_of(e: BaseException) -> str:
    """The dead-letter reason for an exception: its message, prefixed by its
    type unless it is a Reject."""
    if isinstance(e, Reject):
        return str(e)
    text = str(e)
    name = type(e).__name__
    return f"{name}: {text}" if text else name


# ------------------------------------------------------------------ decoding


class _Malformed(Exception):
    pass


class Record:
    """An input record. ``key`` and ``value`` are bytes, or None (no key; a
    None value is a tombstone). ``headers`` is a list of (name, bytes)."""

    __slots__ = ("offset", "timestamp", "key", "value", "headers")

    def __init__(self, offset: int, timestamp: int, key: Optional[bytes], value: Optional[bytes],
                 headers: List[Tuple[str, bytes]]):
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers

    def key_text(self) -> str:
        """The key as text; rejects the record if there is none or it is not UTF-8."""
        if self.key is None:
            raise Reject("the record has no key")
        try:
            return self.key.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject(f"the key is not UTF-8: {e}") from None

    def value_text(self) -> str:
        """The value as text; rejects the record if there is none (a tombstone) or it is not UTF-8."""
        if self.value is None:
            raise Reject("the record has no value (a tombstone)")
        try:
            return self.value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject(f"the value is not UTF-8: {e}") from None

    def json(self) -> Any:
        """The value parsed as JSON; rejects the record if it is not."""
        text = self.value_text()
        try:
            return _json.loads(text)
        except ValueError as e:
            raise Reject(f"the value is not valid JSON: {e}") from None

    def header(self, name: str) -> Optional[bytes]:
        """The value of the first header called ``name``, or None."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def __repr__(self) -> str:
        return (f"Record(offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, "
                f"value={self.value!r}, headers={self.headers!r})")


class _Reader:
    __slots__ = ("b", "p")

    def __init__(self, b: bytes):
        self.b = b
        self.p = 0

    def need(self, n: int) -> None:
        if self.p + n > len(self.b):
            raise _Malformed(f"the host sent a malformed batch (needed {n} bytes at offset {self.p}, "
                             f"length {len(self.b)})")

    def u32(self) -> int:
        self.need(4)
        (x,) = _U32.unpack_from(self.b, self.p)
        self.p += 4
        return x

    def i64(self) -> int:
        self.need(8)
        (x,) = _I64.unpack_from(self.b, self.p)
        self.p += 8
        return x

    def take(self, n: int) -> bytes:
        self.need(n)
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def bytes(self) -> bytes:
        return self.take(self.u32())

    def opt_bytes(self) -> Optional[bytes]:
        n = self.u32()
        return None if n == _NONE else self.take(n)

    def record(self) -> Record:
        self.need(20)
        offset, timestamp, n = _REC_HEAD.unpack_from(self.b, self.p)
        self.p += 20
        key = None if n == _NONE else self.take(n)
        value = self.opt_bytes()
        headers = []
        for _ in range(self.u32()):
            name = self.bytes().decode("utf-8", "replace")
            headers.append((name, self.bytes()))
        return Record(offset, timestamp, key, value, headers)


# ------------------------------------------------------------------ outputs


def _to_bytes(v: Any, what: str) -> Optional[bytes]:
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what} must be str, bytes or None, not {type(v).__name__}")


class Output:
    """A record a function emits. ``key``, ``value`` and header values are str
    (sent as UTF-8), bytes, or None."""

    __slots__ = ("output", "key", "value", "headers", "timestamp")

    def __init__(self, key: Any = None, value: Any = None, *, output: Optional[str] = None,
                 headers: Optional[List[Tuple[str, Any]]] = None, timestamp: Optional[int] = None):
        #: The named output it goes to; None is the step's default output.
        self.output = output
        self.key = key
        self.value = value
        self.headers = list(headers) if headers else []
        #: Event time (ms since the Unix epoch); None keeps the input record's.
        self.timestamp = timestamp

    @staticmethod
    def keyed(key: Any, value: Any) -> "Output":
        """An output with this key and value."""
        return Output(key, value)

    @staticmethod
    def of_value(value: Any) -> "Output":
        """An unkeyed output with this value."""
        return Output(None, value)

    @staticmethod
    def json(v: Any) -> "Output":
        """An unkeyed output whose value is ``v`` as JSON."""
        return Output(None, _json.dumps(v, separators=(",", ":")))

    @staticmethod
    def forward(r: Record) -> "Output":
        """A copy of the input record: same key, value, headers and timestamp."""
        return Output(r.key, r.value, headers=r.headers, timestamp=r.timestamp)

    def to(self, name: str) -> "Output":
        """Sends it to the named output ``name``."""
        self.output = name
        return self

    def with_key(self, key: Any) -> "Output":
        self.key = key
        return self

    def with_value(self, value: Any) -> "Output":
        self.value = value
        return self

    def with_header(self, name: str, value: Any) -> "Output":
        self.headers.append((name, value))
        return self

    def at(self, timestamp: int) -> "Output":
        """Sets the event time (ms since the Unix epoch)."""
        self.timestamp = timestamp
        return self


class _Writer:
    __slots__ = ("parts", "count")

    def __init__(self) -> None:
        self.parts: List[bytes] = [b""]
        self.count = 0

    def u32(self, x: int) -> None:
        self.parts.append(_U32.pack(x))

    def bytes(self, b: bytes) -> None:
        if len(b) >= _NONE:
            raise ValueError("a key, value or header is larger than 4 GiB")
        self.parts.append(_U32.pack(len(b)))
        self.parts.append(b)

    def opt_bytes(self, b: Optional[bytes]) -> None:
        if b is None:
            self.parts.append(_U32.pack(_NONE))
        else:
            self.bytes(b)

    def entry(self, tag: int, index: int) -> None:
        self.count += 1
        self.parts.append(bytes((tag,)) + _U32.pack(index))

    def output(self, index: int, o: Any, ts: int) -> None:
        if not isinstance(o, Output):
            raise TypeError(f"a function must return Output objects, not {type(o).__name__}")
        self.entry(0, index)
        self.opt_bytes(None if o.output is None else str(o.output).encode("utf-8"))
        self.parts.append(_I64.pack(ts if o.timestamp is None else int(o.timestamp)))
        self.opt_bytes(_to_bytes(o.key, "an output's key"))
        self.opt_bytes(_to_bytes(o.value, "an output's value"))
        self.u32(len(o.headers))
        for name, value in o.headers:
            self.bytes(str(name).encode("utf-8"))
            self.bytes(_to_bytes(value, "a header value") or b"")

    def rejected(self, index: int, message: str) -> None:
        self.entry(1, index)
        self.bytes(message.encode("utf-8", "replace"))

    def accumulator(self, index: int, acc: bytes) -> None:
        self.entry(2, index)
        self.bytes(acc)

    def value(self, index: int, v: Optional[bytes]) -> None:
        self.entry(3, index)
        self.opt_bytes(v)

    def mark(self) -> Tuple[int, int]:
        return len(self.parts), self.count

    def undo(self, mark: Tuple[int, int]) -> None:
        del self.parts[mark[0]:]
        self.count = mark[1]

    def finish(self) -> bytes:
        self.parts[0] = _U32.pack(self.count)
        return b"".join(self.parts)


# ------------------------------------------------------------------ settings and log


class _Config:
    """The step's settings (``[steps.config]``, or ``weir test --config k=v``)."""

    def __init__(self) -> None:
        self._entries: List[Tuple[str, str]] = []
        self._set = False

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of ``name`` (the last one set), or ``default``."""
        for n, v in reversed(self._entries):
            if n == name:
                return v
        return default

    def entries(self) -> List[Tuple[str, str]]:
        """Every setting, in order."""
        return list(self._entries)

    def _init(self, entries: List[Tuple[str, str]]) -> None:
        # A second init on the same instance keeps the first settings.
        if not self._set:
            self._entries = [(str(k), str(v)) for k, v in entries]
            self._set = True


config = _Config()


class _Log:
    """Messages into the host's log, tagged with the module and the step."""

    @staticmethod
    def _write(level: str, message: Any) -> None:
        from wit_world.imports import log as wit_log  # the component's import

        wit_log.write(getattr(wit_log.Level, level), str(message))

    def trace(self, m: Any) -> None:
        self._write("TRACE", m)

    def debug(self, m: Any) -> None:
        self._write("DEBUG", m)

    def info(self, m: Any) -> None:
        self._write("INFO", m)

    def warn(self, m: Any) -> None:
        self._write("WARN", m)

    def error(self, m: Any) -> None:
        self._write("ERROR", m)


log = _Log()


# ------------------------------------------------------------------ the four kinds of function


def _emit(out: _Writer, index: int, result: Any, ts: int) -> None:
    if result is None:
        return
    if isinstance(result, Output):
        out.output(index, result, ts)
        return
    try:
        outputs = iter(result)
    except TypeError:
        raise TypeError(f"a function must return an Output, a list of Outputs or None, not {type(result).__name__}") from None
    for o in outputs:
        out.output(index, o, ts)


def _map_batch(batch: bytes, f: Callable[[Record], Any]) -> bytes:
    r = _Reader(batch)
    n = r.u32()
    out = _Writer()
    for i in range(n):
        record = r.record()
        mark = out.mark()
        try:
            _emit(out, i, f(record), record.timestamp)
        except Exception as e:  # noqa: BLE001 - every exception rejects its record
            out.undo(mark)
            out.rejected(i, message_of(e))
    return out.finish()


def _install(f: Any, name: str, cls: type) -> None:
    module = sys.modules.get(getattr(f, "__module__", None) or "__main__")
    if module is None:
        raise RuntimeError(f"weir_guest: cannot find the module of {f!r}")
    setattr(module, name, cls)


def map(f: Callable[[Record], Any]) -> Callable[[Record], Any]:  # noqa: A001 - mirrors the other SDKs
    """Decorates a mapper: ``f(record)`` returns an Output, an iterable of
    them, or None for nothing. Raising rejects the record (a dead letter
    with the exception's message). Exports ``Mapping`` from f's module."""

    class Mapping:
        def init(self, entries: List[Tuple[str, str]]) -> None:
            config._init(entries)

        def process(self, batch: bytes) -> bytes:
            return _map_batch(batch, f)

    _install(f, "Mapping", Mapping)
    return f


class StateEntry:
    """A stored state entry to convert to the module's format: ``store``
    ("" for an aggregator's accumulator), ``key`` (the record key an
    accumulator groups, or the store key) and ``value`` (the stored bytes,
    in the older format)."""

    __slots__ = ("store", "key", "value")

    def __init__(self, store: str, key: Optional[bytes], value: bytes):
        self.store = store
        self.key = key
        self.value = value

    def key_text(self) -> str:
        return "" if self.key is None else self.key.decode("utf-8")

    def value_text(self) -> str:
        return self.value.decode("utf-8")

    def json(self) -> Any:
        return _json.loads(self.value)

    def __repr__(self) -> str:
        return f"StateEntry(store={self.store!r}, key={self.key!r}, value={self.value!r})"


def _install_upgrading(cls: type, impl: Any, encode: Callable[[Any], bytes]) -> None:
    """Exports ``Upgrading`` (the optional ``upgrading`` interface) when the
    class sets ``state_format`` and defines ``upgrade(self, from_format,
    entry)``; both or neither."""
    fmt = getattr(cls, "state_format", None)
    up = getattr(impl, "upgrade", None)
    if fmt is None and up is None:
        return
    if fmt is None or up is None:
        raise TypeError(
            f"{cls.__name__}: a class that sets state_format must define upgrade(self, from_format, entry) too, and the other way round"
        )
    if not isinstance(fmt, int) or not 0 <= fmt < 2**32:
        raise TypeError(f"{cls.__name__}.state_format must be an int from 0 to 2**32-1, not {fmt!r}")

    class Upgrading:
        def state_format(self) -> int:
            return fmt

        def upgrade(self, from_format: int, batch: bytes) -> bytes:
            r = _Reader(batch)
            n = r.u32()
            out = _Writer()
            for i in range(n):
                store = r.bytes().decode("utf-8")
                key = r.opt_bytes()
                value = r.bytes()
                try:
                    v = up(from_format, StateEntry(store, key, value))
                    out.value(i, None if v is None else encode(v))
                except Exception as e:  # noqa: BLE001 - a rejection refuses the switch
                    out.rejected(i, message_of(e))
            return out.finish()

    _install(cls, "Upgrading", Upgrading)


def _require(cls: Any, decorator: str, methods: Tuple[str, ...]) -> None:
    # A missing method would otherwise fail only when the host first calls
    # it (merge: when two sessions come together), record after record.
    if not isinstance(cls, type):
        raise TypeError(f"@weir.{decorator} goes on a class (with {', '.join(methods)}), not on a {type(cls).__name__}")
    for name in methods:
        if not callable(getattr(cls, name, None)):
            raise TypeError(f"@weir.{decorator} class {cls.__name__} has no method {name}(self, ...): "
                            f"it needs {', '.join(methods)}")


def processor(cls: type) -> type:
    """Decorates a processor class (world ``processor``; state and timers in
    ``weir_guest.state``): ``process(self, record)`` returns like a map
    function; ``on_timer(self, time, tag)`` (optional) returns outputs too.
    Exports ``Processing`` from the class's module. With ``state_format = N``
    and ``upgrade(self, from_format, entry)`` (returning a store entry's new
    value, or None to delete it), ``Upgrading`` too (world
    ``upgradable-processor``)."""
    _require(cls, "processor", ("process",))
    impl = cls()

    class Processing:
        def init(self, entries: List[Tuple[str, str]]) -> None:
            config._init(entries)

        def process(self, batch: bytes) -> bytes:
            return _map_batch(batch, impl.process)

        def on_timer(self, time: int, tag: bytes) -> bytes:
            out = _Writer()
            try:
                handler = getattr(impl, "on_timer", None)
                _emit(out, 0, handler(time, tag) if handler else None, time)
            except Exception as e:  # noqa: BLE001
                out = _Writer()
                out.rejected(0, message_of(e))
            return out.finish()

    _install(cls, "Processing", Processing)
    _install_upgrading(cls, impl, _presented)
    return cls


class Window:
    """A time window, [start, end) in ms since the Unix epoch."""

    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int):
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"Window({self.start}, {self.end})"


def _presented(v: Any) -> Optional[bytes]:
    if v is None:
        return None
    if isinstance(v, (str, bytes, bytearray, memoryview)):
        return _to_bytes(v, "a presented value")
    return _json.dumps(v, separators=(",", ":")).encode("utf-8")


def aggregate(cls: type) -> type:
    """Decorates an aggregate class (world ``aggregator``): the host keeps one
    accumulator per key and window, stored as JSON. ``init(self)`` returns a
    new accumulator; ``add(self, acc, record)`` and ``merge(self, a, b)``
    return the new one; raising in add rejects the record (it is then left
    out of every group). ``present(self, acc, key, window)`` (optional)
    returns the output value (str, bytes, None for nothing, or anything else
    as JSON); by default the accumulator as JSON. Exports ``Aggregation``.

    A new version whose accumulator format changed sets ``state_format = N``
    and defines ``upgrade(self, from_format, entry)`` (a ``StateEntry``),
    which returns the new accumulator (None drops it; raising refuses the
    switch to this version); ``Upgrading`` is then exported too (world
    ``upgradable-aggregator``)."""
    _require(cls, "aggregate", ("init", "add", "merge"))
    impl = cls()

    def decode(b: Optional[bytes]) -> Any:
        if b is None:
            return impl.init()
        try:
            return _json.loads(b)
        except ValueError as e:
            raise ValueError(f"stored accumulator does not decode: {e}") from None

    def encode(acc: Any) -> bytes:
        return _json.dumps(acc, separators=(",", ":")).encode("utf-8")

    class Aggregation:
        def init(self, entries: List[Tuple[str, str]]) -> None:
            config._init(entries)

        def add(self, batch: bytes) -> bytes:
            r = _Reader(batch)
            n = r.u32()
            records = [r.record() for _ in range(n)]
            groups = []
            for _ in range(r.u32()):
                acc = r.opt_bytes()
                members = [r.u32() for _ in range(r.u32())]
                for k in members:
                    if k >= n:
                        raise _Malformed(f"group member {k} out of range")
                groups.append((acc, members))
            # A record rejected in one group is left out of every group:
            # rerun until no new rejection appears.
            rejected: dict = {}
            while True:
                before = len(rejected)
                accs = []
                for acc_bytes, members in groups:
                    acc = decode(acc_bytes)
                    for k in members:
                        if k in rejected:
                            continue
                        try:
                            acc = impl.add(acc, records[k])
                        except Exception as e:  # noqa: BLE001
                            rejected[k] = message_of(e)
                    accs.append(acc)
                if len(rejected) == before:
                    out = _Writer()
                    for k in sorted(rejected):
                        out.rejected(k, rejected[k])
                    for g, acc in enumerate(accs):
                        out.accumulator(g, encode(acc))
                    return out.finish()

        def merge(self, a: bytes, b: bytes) -> bytes:
            from componentize_py_types import Err

            try:
                return encode(impl.merge(decode(a), decode(b)))
            except Exception as e:  # noqa: BLE001
                raise Err(message_of(e)) from None

        def present(self, batch: bytes) -> bytes:
            r = _Reader(batch)
            n = r.u32()
            out = _Writer()
            present = getattr(impl, "present", None)
            for i in range(n):
                key = r.opt_bytes()
                start = r.i64()
                end = r.i64()
                acc_bytes = r.bytes()
                window = Window(start, end) if (start != 0 or end != 0) else None
                try:
                    acc = decode(acc_bytes)
                    out.value(i, _presented(present(acc, key, window) if present else acc))
                except Exception as e:  # noqa: BLE001
                    out.rejected(i, message_of(e))
            return out.finish()

    _install(cls, "Aggregation", Aggregation)
    _install_upgrading(cls, impl, encode)
    return cls


class Pair:
    """The two sides of a join that met: bytes, or None when that side did not match."""

    __slots__ = ("key", "timestamp", "left", "right")

    def __init__(self, key: Optional[bytes], timestamp: int, left: Optional[bytes], right: Optional[bytes]):
        self.key = key
        self.timestamp = timestamp
        self.left = left
        self.right = right


def join(f: Callable[[Pair], Any]) -> Callable[[Pair], Any]:
    """Decorates a joiner (world ``joiner``): ``f(pair)`` returns the combined
    value (str, bytes, None for a result without a value, a tombstone in a
    table join, or anything else as JSON);
    raising rejects the pair. Exports ``Joining`` from f's module."""

    class Joining:
        def init(self, entries: List[Tuple[str, str]]) -> None:
            config._init(entries)

        def join(self, batch: bytes) -> bytes:
            r = _Reader(batch)
            n = r.u32()
            out = _Writer()
            for i in range(n):
                key = r.opt_bytes()
                timestamp = r.i64()
                left = r.opt_bytes()
                right = r.opt_bytes()
                try:
                    out.value(i, _presented(f(Pair(key, timestamp, left, right))))
                except Exception as e:  # noqa: BLE001
                    out.rejected(i, message_of(e))
            return out.finish()

    _install(f, "Joining", Joining)
    return f



def __getattr__(name: str) -> Any:
    # `from weir_guest import timers` (as `from weir_guest import state`): the
    # timers live in weir_guest.state, imported only when asked for, since
    # only a processor's world has the state and timers imports.
    if name == "timers":
        from .state import timers

        return timers
    raise AttributeError(f"module 'weir_guest' has no attribute {name!r}")
