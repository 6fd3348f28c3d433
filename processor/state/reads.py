"""Reading attribute values and event logs for the Profiles Store API (signals-api §1.7, §1.9).

Readers never write. Values are computed at read time from the stored aggregation state with
the same ``AggSpec`` the worker uses (``topology.spec_for``), so windows decay and
``time_since_*`` grow between reads without any event.

The attribute read is the API's hot path (a p99 target of 5 ms for 10 ids x 20 attributes), so
it is shaped for few Python operations: a request's columns are compiled once into
:class:`ColumnRead` objects (hash fields pre-encoded as RESP), and one request is one Redis
round trip of pre-packed commands (the registry version and one HMGET per identifier of the
requested groups' fields, ``keys.GROUP_FIELD``) on :class:`ReadConnections`, parsed by hiredis;
each group field is parsed once for all identifiers, and values come from its states through
the readers of ``processor.state.values``, built once per attribute.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from processor.domain import aggregations
from processor.domain.definitions import AttributeGroup
from processor.domain.topology import entity_key_of, spec_for
from processor.state import keys, resp, values

# What one requested column reads: a group and one of its attribute (or batch field) names.
GroupAttributes = Sequence[tuple[AttributeGroup, Sequence[str]]]

_IDS_FIELD = keys.IDENTIFIERS_FIELD.encode()


_GET_VERSION = resp.command("GET", keys.REGISTRY_VERSION)


@dataclass(frozen=True, slots=True)
class _Column:
    """One readable column: its group's hash field, its name in the group's object and how its
    stored states are read (``values``); for a batch field, whose stored value is its plain
    JSON value, spec and readers are None."""

    field: bytes
    name: str
    spec: aggregations.AggSpec | None
    read: values.ValueReader | None
    read_all: values.ColumnReader | None
    unset: Any  # the state of a known entity without one for this attribute (no event yet)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """What reading a group needs, computed once per group object (definitions are frozen)."""

    group: AttributeGroup  # held so that id(group) cannot be reused while cached
    entity_key: str
    columns: dict[str, _Column]


_COMPILED: dict[int, _Compiled] = {}
_COMPILED_MAX = 4096


def _compiled(group: AttributeGroup) -> _Compiled:
    hit = _COMPILED.get(id(group))
    if hit is not None and hit.group is group:
        return hit
    columns: dict[str, _Column] = {}
    field = keys.group_field(group.name, group.version).encode()
    for attribute in group.attributes or ():
        spec = spec_for(attribute, group)
        columns[attribute.name] = _Column(field, attribute.name, spec, values.value_reader(spec),
                                          values.column_reader(spec), aggregations.new_state(spec))  # fmt: skip
    for batch_field in group.fields or ():
        columns[batch_field.name] = _Column(field, batch_field.name, None, None, None, None)
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()  # registry changes are rare; a full reset is simpler than an LRU
    compiled = _COMPILED[id(group)] = _Compiled(group, entity_key_of(group), columns)
    return compiled


def entity_key(group: AttributeGroup) -> str:
    """``topology.entity_key_of(group)``, memoised for the read path."""
    return _compiled(group).entity_key


def _columns(groups_and_attrs: GroupAttributes, key: str) -> list[_Column]:
    columns: list[_Column] = []
    for group, names in groups_and_attrs:
        compiled = _compiled(group)
        if compiled.entity_key != key:
            raise ValueError(
                f"attribute group {group.name} is keyed on {compiled.entity_key}, not {key}"
            )
        for name in names:
            column = compiled.columns.get(name)
            if column is None:
                raise ValueError(f"attribute group {group.name} has no attribute {name}")
            columns.append(column)
    return columns


@dataclass(frozen=True, slots=True)
class ColumnRead:
    """Columns stored under one entity key, compiled for reading (:func:`compile_read`): the
    HMGET of their groups' hash fields and the entity's identifiers field, pre-packed but for
    the key, and how each column's state is decoded. Immutable; cache it with the definitions
    it was compiled from."""

    entity_key: str
    columns: tuple[_Column, ...]
    column_at: tuple[int, ...]  # per column, the position of its group's field in the HMGET
    head: bytes  # RESP array header and command name
    tail: bytes  # RESP bulk strings of the fields


def compile_read(groups_and_attrs: GroupAttributes, key: str) -> ColumnRead:
    """The read of ``(group, attribute names)`` columns, in that order, of entities stored
    under ``key`` (``topology.entity_key_of``). ``ValueError`` when a group is keyed on
    another entity key or lacks a name."""
    columns = _columns(groups_and_attrs, key)
    positions = {field: at for at, field in enumerate(dict.fromkeys(column.field for column in columns))}
    fields = [*positions, _IDS_FIELD]
    return ColumnRead(
        key, tuple(columns), tuple(positions[column.field] for column in columns),
        b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2), b"".join(map(resp.bulk, fields)),
    )


async def read_columns(
    connections: ReadConnections, batch: Sequence[tuple[ColumnRead, Sequence[str]]], now_ms: int
) -> tuple[int, list[list[list[Any]]]]:
    """The registry version and, per ``(read, ids)`` of ``batch``, column-major values: one
    list per column of the read, each with one value per id in ``ids`` order.

    One Redis round trip: GET of the registry version followed by one HMGET per id of the
    read's group fields plus the entity's identifiers field, which tells a known entity from a
    never-seen one. The version comes first, so values are at least as new as it: a caller
    holding definitions of that version answers consistently, and one holding older
    definitions knows to reload them and read again. A never-seen id reads None for every
    column; a known entity without state for an attribute (no matching event yet) reads the
    attribute's ``default_value`` (None when unset), like an empty aggregation.
    """
    parts = [_GET_VERSION]
    count = 1
    for read, ids in batch:
        count += len(ids)
        for entity_id in ids:
            parts += (read.head, resp.bulk(keys.entity_state(read.entity_key, entity_id).encode()), read.tail)
    replies = await connections.round_trip(b"".join(parts), count)
    values: list[list[list[Any]]] = []
    at = 1
    for read, ids in batch:
        values.append(_decode(read, replies[at : at + len(ids)], now_ms))
        at += len(ids)
    return int(replies[0] or 0), values


def _decode(read: ColumnRead, rows: list[list[Any]], now_ms: int) -> list[list[Any]]:
    """Per column of ``read``, the values of ``rows`` (the HMGET replies, one per id)."""
    if not rows:
        return [[] for _ in read.columns]
    fields = list(zip(*rows, strict=True))  # per hash field, the stored value of each id
    known = fields[-1]  # the identifiers field: None for a never-seen entity
    groups: list[tuple[list[Any], bool]] = []  # per group field: its objects, and no tagged key
    for stored in fields[:-1]:
        if None not in stored:
            text, objects = values.parse_all(stored)
        else:
            text, parsed = values.parse_all([raw for raw in stored if raw is not None])
            found = iter(parsed)
            objects = [None if raw is None else next(found) for raw in stored]
        groups.append((objects, not values.has_tagged_keys(text)))
    decoded: list[list[Any]] = []
    for column, at in zip(read.columns, read.column_at, strict=True):
        objects, plain = groups[at]
        name = column.name
        states = [None if group is None else group.get(name) for group in objects]
        read_one = column.read
        if read_one is None:  # a batch field: its plain JSON value
            decoded.append(states)
        elif None not in states:  # every id has a state: the common case, column-wise
            decoded.append(column.read_all(states, now_ms, plain))  # type: ignore[misc]
        else:
            unset = read_one(column.unset, now_ms)
            decoded.append([
                read_one(state, now_ms) if state is not None
                else unset if entity is not None
                else None
                for state, entity in zip(states, known, strict=True)
            ])  # fmt: skip
    return decoded


class ReadConnections:
    """The connections :func:`read_columns` sends its pre-packed commands on: plain sockets to
    the same Redis as ``redis`` (address, database and credentials from its pool), replies
    parsed by hiredis. A read costs a write and the reads of its replies, about a quarter of
    the CPU of a redis-py pipeline, which packs, tracks and times out each command in Python.
    TLS or custom connection classes are served by a redis-py connection from ``redis``'s pool
    instead. Use from one event loop; :meth:`aclose` when done.
    """

    IDLE_MAX = 32

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        pool = redis.connection_pool
        options = pool.connection_kwargs
        plain = pool.connection_class in (Connection, UnixDomainSocketConnection)
        self._direct = plain and not options.get("credential_provider")
        self._address: dict[str, Any] = {k: options.get(k) for k in ("host", "port", "path")}
        self._timeout = float(options.get("socket_timeout") or options.get("orig_socket_timeout") or 5)
        handshake: list[list[str]] = []
        if options.get("password"):
            handshake.append(["AUTH", *([options["username"]] if options.get("username") else []),
                              options["password"]])  # fmt: skip
        if options.get("db"):
            handshake.append(["SELECT", str(options["db"])])
        self._handshake = b"".join(resp.command(*command) for command in handshake)
        self._handshake_replies = len(handshake)
        self._idle: list[_Wire] = []

    async def round_trip(self, packed: bytes, replies: int) -> list[Any]:
        """Send ``packed`` (RESP commands) and return its ``replies`` replies, in order; an
        error reply raises ``redis.exceptions.ResponseError``. A connection that failed or
        was cancelled part-way is closed, never reused with replies left unread on it."""
        if not self._direct:
            return await resp.round_trip(self._redis, packed, replies)
        for attempt in (1, 2):
            reused = attempt == 1 and bool(self._idle)
            wire = self._idle.pop() if reused else await self._connect()
            try:
                async with asyncio.timeout(self._timeout):
                    answers = await wire.call(packed, replies)
            except (RedisConnectionError, OSError):
                wire.close()
                if reused:
                    # An idle connection died (Redis restarted, or dropped idle clients): its
                    # idle siblings most likely did too. Drop them all; retry on a new one.
                    await self.aclose()
                    continue
                raise
            except BaseException:
                wire.close()
                raise
            if len(self._idle) < self.IDLE_MAX:
                self._idle.append(wire)
            else:
                wire.close()
            _raise_errors(answers)
            return answers
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _connect(self) -> _Wire:
        try:
            async with asyncio.timeout(self._timeout):
                if self._address["path"]:
                    reader, writer = await asyncio.open_unix_connection(self._address["path"])
                else:
                    reader, writer = await asyncio.open_connection(
                        self._address["host"], self._address["port"])
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis for reads: {exc}") from exc
        wire = _Wire(reader, writer)
        if self._handshake_replies:
            try:
                async with asyncio.timeout(self._timeout):
                    _raise_errors(await wire.call(self._handshake, self._handshake_replies))
            except BaseException:
                wire.close()
                raise
        return wire


class _Wire:
    """One connection: write commands, read replies with hiredis."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    async def call(self, packed: bytes, replies: int) -> list[Any]:
        self._writer.write(packed)
        answers: list[Any] = []
        while len(answers) < replies:
            data = await self._reader.read(1 << 16)
            if not data:
                raise RedisConnectionError("Redis closed the connection")
            self._parser.feed(data)
            while (reply := self._parser.gets()) is not False:
                answers.append(reply)
        return answers

    def close(self) -> None:
        self._writer.close()


def _raise_errors(answers: list[Any]) -> None:
    for answer in answers:
        if isinstance(answer, hiredis.ReplyError):
            raise ResponseError(str(answer))


async def read_event_log(redis: Redis, key: str, entity_id: str, name: str) -> list[dict[str, Any]]:
    """The entries of one entity's event log, oldest first. The worker keeps them in the
    entity's state hash (written atomically with its watermarks, so exactly once): one JSON
    object per selected event, ``{"ts": <event ms>, "event": <name>, "properties": {...}}``,
    trimmed to ``max_events`` and ``max_age_seconds``."""
    raw = await redis.hget(keys.entity_state(key, entity_id), keys.event_log_field(name))
    if raw is None:
        return []
    try:
        entries = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
