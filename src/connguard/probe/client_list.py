"""Parse CLIENT LIST by field name into ClientRecords, fast enough for 50,000 clients."""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Mapping, Sequence

from connguard.probe.model import ClientRecord

# A value is everything after the first '=' up to the next space; names cannot hold spaces
# (CLIENT SETNAME refuses them), so only a unix path with a space breaks this, and the
# count check below sends such a reply to the slow per-line parser.
_KEY = re.compile(r"(?:^| )([^ =]+)=")

_INT_FIELDS = {"id": "id", "fd": "fd", "age": "age_s", "idle": "idle_s", "db": "db",
               "sub": "sub", "psub": "psub", "ssub": "ssub", "multi": "multi", "resp": "resp"}
_STR_FIELDS = {"addr": "addr", "name": "name", "flags": "flags", "cmd": "cmd",
               "laddr": "laddr", "user": "user", "lib-name": "lib_name", "lib-ver": "lib_ver"}
_KNOWN = set(_INT_FIELDS) | set(_STR_FIELDS)
_DEFAULTS = {"sub": 0, "psub": 0, "multi": -1, "fd": -1, "db": 0, "age_s": 0, "idle_s": 0,
             "name": "", "flags": "N", "cmd": "", "addr": ""}


def _to_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


class _RowExtra(Mapping[str, str]):
    """The fields of one row that ClientRecord has no attribute for, read from the table on demand."""

    __slots__ = ("_table", "_row")

    def __init__(self, table: "ClientTable", row: int) -> None:
        self._table = table
        self._row = row

    def __getitem__(self, key: str) -> str:
        if key in _KNOWN:
            raise KeyError(key)
        return self._table.column(key)[self._row]  # type: ignore[index]

    def __iter__(self) -> Iterator[str]:
        return (f for f in self._table.fields if f not in _KNOWN)

    def __len__(self) -> int:
        return sum(1 for f in self._table.fields if f not in _KNOWN)

    def __repr__(self) -> str:
        return repr(dict(self))


class ClientTable:
    """CLIENT LIST as columns, one per field in reply order. Columns and records are built on demand,
    so a 10,000-client reply costs only for the fields the analysis reads."""

    __slots__ = ("fields", "_tokens", "_rows", "_columns", "_records")

    def __init__(self, fields: Sequence[str], tokens: Sequence[str], rows: int,
                 columns: dict[str, list[str]] | None = None) -> None:
        self.fields = tuple(fields)
        self._tokens = tokens  # "key=value" tokens, row-major, len == rows * len(fields)
        self._rows = rows
        self._columns: dict[str, list[str]] = dict(columns or {})
        self._records: tuple[ClientRecord, ...] | None = None

    def __len__(self) -> int:
        return self._rows

    def column(self, name: str) -> list[str] | None:
        """The values of one field, by name; None when this server does not report the field."""
        col = self._columns.get(name)
        if col is None:
            if name not in self.fields:
                return None
            k = self.fields.index(name)
            cut = len(name) + 1
            col = [tok[cut:] for tok in self._tokens[k::len(self.fields)]]
            self._columns[name] = col
        return col

    def int_column(self, name: str) -> list[int] | None:
        col = self.column(name)
        if col is None:
            return None
        try:
            return list(map(int, col))
        except ValueError:
            return [_to_int(v) for v in col]

    def records(self) -> tuple[ClientRecord, ...]:
        if self._records is None:
            self._records = tuple(self._build_records())
        return self._records

    def _build_records(self) -> Iterable[ClientRecord]:
        typed: dict[str, Sequence[object]] = {}
        for key, attr in _INT_FIELDS.items():
            col = self.int_column(key)
            if col is not None:
                typed[attr] = col
        for key, attr in _STR_FIELDS.items():
            col = self.column(key)
            if col is not None:
                typed[attr] = col
        has_unknown = any(name not in _KNOWN for name in self.fields)
        attrs = list(typed)
        cols = [typed[a] for a in attrs]
        missing = {a: v for a, v in _DEFAULTS.items() if a not in typed}
        for i, values in enumerate(zip(*cols)):
            kwargs = dict(zip(attrs, values))
            if missing:
                kwargs.update(missing)
            if has_unknown:
                kwargs["extra"] = _RowExtra(self, i)
            yield ClientRecord(**kwargs)  # type: ignore[arg-type]


def _parse_slow(text: str) -> ClientTable:
    """Per-line parse, tolerant of values with spaces and of lines with differing fields."""
    rows: list[dict[str, str]] = []
    order: dict[str, None] = {}
    for line in text.splitlines():
        row: dict[str, str] = {}
        last = None
        for token in line.split(" "):
            key, sep, value = token.partition("=")
            if sep and (last is None or key.replace("-", "").isalnum()):
                row[key] = value
                last = key
                order.setdefault(key, None)
            elif last is not None:
                row[last] += " " + token
        if row:
            rows.append(row)
    fields = list(order)
    columns = {f: [row.get(f, "") for row in rows] for f in fields}
    return ClientTable(fields, (), len(rows), columns)


def parse_client_list(reply: str | bytes) -> ClientTable:
    """Parse a CLIENT LIST reply. Every field is kept, known or not, and looked up by name."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = text.strip("\r\n")
    if not text:
        return ClientTable((), (), 0)
    first_end = text.find("\n")
    first = (text if first_end < 0 else text[:first_end]).rstrip("\r")
    last = text[text.rfind("\n") + 1:].rstrip("\r")
    fields = _KEY.findall(first)
    if _KEY.findall(last) != fields:
        return _parse_slow(text)
    # One C-level split for the whole reply; a value holding a space (a unix path) or a line
    # with other fields changes the token count and sends the reply to the slow parser.
    tokens = text.split()
    rows = text.count("\n") + 1
    if len(tokens) != len(fields) * rows or not tokens[-1].startswith(fields[-1] + "="):
        return _parse_slow(text)
    return ClientTable(fields, tokens, rows)


def parse_client_records(reply: str | bytes) -> tuple[ClientRecord, ...]:
    return parse_client_list(reply).records()
