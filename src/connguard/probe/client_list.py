"""Parse CLIENT LIST by field name into a column table and ClientRecords, fast enough for 50,000 clients."""

from __future__ import annotations

import gc
import re
from contextlib import contextmanager
from functools import lru_cache
from itertools import repeat
from typing import Iterable, Iterator, Mapping, Sequence

from connguard.probe.model import ClientRecord

# A value is everything after the first '=' up to the next space (names may hold '='). Names,
# lib-name/lib-ver and ACL user names cannot hold spaces (the server refuses them), so only a unix
# socket path with a space breaks this; the row-count check in ClientTable._extract then sends the
# reply to the slow per-line parser.
_KEY = re.compile(r"(?:^| )([^ =]+)=")

# CLIENT LIST field -> ClientRecord attribute, in ClientRecord's positional order.
_RECORD_FIELDS: tuple[tuple[str, str, bool], ...] = (  # (field, attribute, is_int)
    ("id", "id", True), ("addr", "addr", False), ("fd", "fd", True), ("name", "name", False),
    ("age", "age_s", True), ("idle", "idle_s", True), ("flags", "flags", False), ("db", "db", True),
    ("cmd", "cmd", False), ("sub", "sub", True), ("psub", "psub", True), ("ssub", "ssub", True),
    ("multi", "multi", True), ("laddr", "laddr", False), ("user", "user", False), ("resp", "resp", True),
    ("lib-name", "lib_name", False), ("lib-ver", "lib_ver", False),
)
assert tuple(a for _, a, _ in _RECORD_FIELDS) + ("extra",) == ClientRecord._fields
_KNOWN = frozenset(f for f, _, _ in _RECORD_FIELDS)
# What a record holds when its server does not report a field at all.
_MISSING = {"id": -1, "addr": "", "fd": -1, "name": "", "age": 0, "idle": 0, "flags": "N", "db": 0, "cmd": "",
            "sub": 0, "psub": 0, "multi": -1}


def _to_int(value: str | None) -> int | None:
    if value is None:  # the field is missing from this line (slow path only)
        return None
    try:
        return int(value)
    except ValueError:
        return -1


class _RowExtra(tuple, Mapping[str, str]):  # type: ignore[misc]
    """The fields of one row that ClientRecord has no attribute for, read from the table on demand.

    A (table, row) tuple underneath, so 50,000 of them are made by one C call each; every Mapping
    method is defined here, so nothing of tuple's shows through."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:  # type: ignore[override]
        if key in _KNOWN:
            raise KeyError(key)
        table, row = tuple.__getitem__(self, 0), tuple.__getitem__(self, 1)
        col = table.column(key)
        if col is None or col[row] is None:  # None: this line lacks the field (slow path only)
            raise KeyError(key)
        return col[row]

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        table, row = tuple.__getitem__(self, 0), tuple.__getitem__(self, 1)
        return (f for f in table.fields if f not in _KNOWN and table.column(f)[row] is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:  # type: ignore[override]
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return dict(self.items()) == dict(other.items()) if isinstance(other, Mapping) else NotImplemented

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]
    __lt__ = __le__ = __gt__ = __ge__ = None  # type: ignore[assignment]
    __add__ = __mul__ = __rmul__ = None  # type: ignore[assignment]
    count = index = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def __reduce__(self) -> tuple[object, ...]:
        return (dict, (dict(self.items()),))  # pickles as the plain dict it stands for


# Fields further apart than this are read by separate regexes; closer ones share one pass.
_GROUP_GAP = 4
# Possessive: a value never gives characters back. Inside a line a value ends at a space (the
# single-character class is the regex engine's fastest loop); the last field of a line ends at EOL.
_VALUE, _LAST_VALUE = r"[^ ]*+", r"[^ \r\n]*+"
_UNIQUE_INTS = frozenset({"id", "fd"})  # every row differs; other int columns repeat a handful of values


@lru_cache(maxsize=256)
def _group_regex(layout: tuple[str, ...], lo: int, hi: int, wanted: frozenset[str]) -> re.Pattern[str]:
    """One regex over layout[lo..hi], capturing `wanted`, that must end where the next field begins.
    A value holding a space (a unix path) breaks the match for its line, which the row count catches."""
    parts = []
    for i in range(lo, hi + 1):
        key = layout[i]
        value = _LAST_VALUE if i == len(layout) - 1 else _VALUE
        value = f"({value})" if key in wanted else value
        # The first field is not anchored to a line start (an anchor costs a slower search); the
        # next-field lookahead and the row count keep a stray match from passing unnoticed.
        parts.append(("" if i == 0 else " ") + re.escape(key) + "=" + value)
    parts.append(f"(?= {re.escape(layout[hi + 1])}=)" if hi + 1 < len(layout) else r"(?=\r?\n|\Z)")
    return re.compile("".join(parts))


def _ints(name: str, col: Sequence[str | None]) -> list[int | None]:
    if name not in _UNIQUE_INTS:
        # Columns like db, sub, multi, resp hold a few distinct values: convert each once.
        distinct = set(col)
        if len(distinct) * 4 < len(col):
            table = {v: _to_int(v) for v in distinct}
            return list(map(table.__getitem__, col))
    try:
        return list(map(int, col))
    except (ValueError, TypeError):
        return [_to_int(v) for v in col]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic GC while building columns and records. A 50,000-client reply makes ~200,000
    tuples and not one reference cycle, yet the collector would sweep the growing heap hundreds of
    times meanwhile, nearly doubling the build time. Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _LayoutMismatch(Exception):
    """Some line does not follow the first line's layout; the table falls back to the per-line parser."""


class ClientTable:
    """CLIENT LIST as columns, one per field in reply order. Columns and records are built on demand
    by a few regex passes over the reply, so a 50,000-client reply costs only for the fields read."""

    __slots__ = ("fields", "_text", "_rows", "_columns", "_records", "_index")

    def __init__(self, fields: Sequence[str], text: str | None, rows: int,
                 columns: dict[str, Sequence[str]] | None = None) -> None:
        self.fields = tuple(fields)
        self._index = {f: i for i, f in enumerate(self.fields)}
        self._text = text  # the reply, on the fast path; None once every column is in `_columns`
        self._rows = rows
        self._columns: dict[str, Sequence[str]] = dict(columns or {})
        self._records: tuple[ClientRecord, ...] | None = None

    def __len__(self) -> int:
        return self._rows

    @property
    def fast(self) -> bool:
        """True while columns are read straight from the reply (no value held a space so far)."""
        return self._text is not None

    def column(self, name: str) -> Sequence[str] | None:
        """The values of one field, by name; None when this server does not report the field."""
        return self.columns((name,))[name]

    def columns(self, names: Iterable[str]) -> dict[str, Sequence[str] | None]:
        """Several columns at once: fields close together in the layout share one pass over the reply."""
        names = tuple(names)
        todo = sorted({self._index[n] for n in names if n in self._index and n not in self._columns})
        if todo and self._text is not None:
            try:
                with _collector_paused():
                    self._extract(todo)
            except _LayoutMismatch:
                self._fall_back()
        return {n: self._columns.get(n) for n in names}

    def _extract(self, todo: list[int]) -> None:
        runs: list[list[int]] = [[todo[0]]]
        for i in todo[1:]:
            if i - runs[-1][-1] <= _GROUP_GAP:
                runs[-1].append(i)
            else:
                runs.append([i])
        found: dict[str, Sequence[str]] = {}
        for run in runs:
            wanted = frozenset(self.fields[i] for i in run)
            matches = _group_regex(self.fields, run[0], run[-1], wanted).findall(self._text)  # type: ignore[arg-type]
            if len(matches) != self._rows:
                raise _LayoutMismatch
            if len(run) == 1:
                found[self.fields[run[0]]] = matches
            else:
                found.update(zip((self.fields[i] for i in run), zip(*matches)))
        self._columns.update(found)

    def _fall_back(self) -> None:
        slow = _parse_slow(self._text or "")
        self._text = None
        self.fields, self._index, self._rows = slow.fields, slow._index, slow._rows
        self._columns = slow._columns

    def int_column(self, name: str) -> list[int] | None:
        col = self.column(name)
        return None if col is None else _ints(name, col)

    def records(self) -> tuple[ClientRecord, ...]:
        """Every row as a ClientRecord, built once and cached."""
        if self._records is None:
            with _collector_paused():
                self._records = self._build_records()
        return self._records

    def _build_records(self) -> tuple[ClientRecord, ...]:
        typed = self.columns(f for f, _, _ in _RECORD_FIELDS)
        n = self._rows
        cols: list[object] = []
        for field, _attr, is_int in _RECORD_FIELDS:
            col = typed[field]
            if col is None:
                cols.append(repeat(_MISSING.get(field), n))
                continue
            if is_int:
                col = _ints(field, col)
            if self._text is None and field in _MISSING:  # slow path: a line may lack a required field
                default = _MISSING[field]
                col = [default if v is None else v for v in col]
            cols.append(col)
        if any(f not in _KNOWN for f in self.fields):
            cols.append(map(tuple.__new__, repeat(_RowExtra, n), zip(repeat(self, n), range(n))))
        else:
            cols.append(repeat(ClientRecord._field_defaults["extra"], n))
        # tuple.__new__ on the NamedTuple class skips its Python-level __new__: one C call per row.
        return tuple(map(tuple.__new__, repeat(ClientRecord, n), zip(*cols)))  # type: ignore[arg-type]


def _is_field_name(key: str) -> bool:
    return key.replace("-", "").isalnum()


def _parse_slow(text: str) -> ClientTable:
    """Per-line parse, tolerant of values with spaces (a unix path) and of lines with differing fields."""
    rows: list[dict[str, str]] = []
    order: dict[str, None] = {}
    # Lines end at "\n" only, as on the fast path: splitlines() would also cut at \v, \f, \x1c-\x1e, \x85,
    # \u2028/9, which an ACL user name may hold.
    for line in text.split("\n"):
        line = line.rstrip("\r ")
        row: dict[str, str] = {}
        last = None
        for token in line.split(" "):
            key, sep, value = token.partition("=")
            # A token without '=' or with a key that cannot be a field name continues the last value.
            if sep and (last is None or _is_field_name(key)):
                row[key] = value
                last = key
                order.setdefault(key, None)
            elif last is not None:
                row[last] += " " + token
        if row:
            rows.append(row)
    fields = list(order)
    columns = {f: [row.get(f) for row in rows] for f in fields}  # None: this line lacks the field
    return ClientTable(fields, None, len(rows), columns)


def parse_client_list(reply: str | bytes) -> ClientTable:
    """Parse a CLIENT LIST reply. Every field is kept, known or not, and looked up by name.

    Only the first and last lines are read here; columns are cut out on demand. A reply whose lines
    do not all follow the first line's layout is handed to the per-line parser."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    # No strip(): copying a 13 MB reply costs more than counting its trailing newlines.
    body_end = len(text)
    while body_end and text[body_end - 1] in "\r\n":
        body_end -= 1
    if body_end == 0:
        return ClientTable((), None, 0)
    first_end = text.find("\n", 0, body_end)
    first = text[:first_end if first_end >= 0 else body_end].rstrip("\r")
    last = text[text.rfind("\n", 0, body_end) + 1:body_end].rstrip("\r")
    fields = _KEY.findall(first)
    # A field named twice in a line (no server does it, a damaged reply might) has no single column; a
    # "key" that is not a field name continues the value before it, as the per-line parser reads it.
    if (not fields or not first.startswith(fields[0] + "=") or _KEY.findall(last) != fields
            or len(set(fields)) != len(fields) or not all(_is_field_name(f) for f in fields[1:])):
        return _parse_slow(text)
    rows = text.count("\n", 0, body_end) + 1
    # The first field's regex is not anchored to a line start, so a line with a field in front of it
    # ("x=1 id=5 ...") would still match; every line must start with the first field (one C-speed count).
    if text.count("\n" + fields[0] + "=", 0, body_end) != rows - 1:
        return _parse_slow(text)
    return ClientTable(fields, text, rows)
