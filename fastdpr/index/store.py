"""A SQLite passage store addressed by integer label (the HNSW label, ``0..n-1``).

The store is written once, inside a staging index directory that is published atomically, and is
only ever read afterwards. That shapes both halves: the writer trades durability for speed (a crash
mid-build leaves a staging directory that is thrown away anyway), and the reader opens the file
read-only.
"""

from __future__ import annotations

import json
import operator
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, SupportsIndex

import numpy as np

from fastdpr.common.errors import CorpusError, FastDPRError, IndexLoadError

#: Bumped whenever the table layout changes; stored in ``PRAGMA user_version`` so a reader can tell an
#: old or foreign database from a corrupt one.
SCHEMA_VERSION = 1

#: Rows per transaction. Large enough that per-transaction overhead vanishes, small enough that a
#: failed batch (duplicate id) is cheap to re-scan for the offending row.
DEFAULT_BATCH_SIZE = 10_000

# Older SQLite builds (< 3.32) allow at most 999 host parameters per statement; stay below it so
# lookups work with whatever SQLite the Python build links.
_MAX_PARAMS = 900
#: Lookups of more labels than this read each distinct passage once (a single question's 100 hits are
#: all distinct: no dictionary for them).
_DEDUPLICATE_ABOVE = 1000

_SCHEMA = """
CREATE TABLE passages (
    label INTEGER PRIMARY KEY,
    id    TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text  TEXT NOT NULL
)
"""

Row = tuple[int, str, str, str]
#: A stored passage without its label: ``(id, title, text)``.
PassageText = tuple[str, str, str]

#: Bytes of the store SQLite reads through a memory map (SQLite caps it at its compile-time maximum,
#: 2 GiB by default; the rest of a larger store is read as usual).
_MMAP_BYTES = 1 << 40
#: The lookup of a JSON array of labels: one row per element, in the array's order.
_JSON_LOOKUP = ("SELECT p.id, p.title, p.text FROM json_each(?) AS j JOIN passages AS p ON p.label = j.value "
                "ORDER BY j.key")


def _labels(labels: Iterable[SupportsIndex]) -> list[int]:
    # operator.index: numpy integers (what searchers return) are not valid SQLite parameters, and unlike
    # int() it rejects floats, which would only reach here by mistake. An int64 array converts in C.
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        return labels.ravel().tolist()
    return [operator.index(label) for label in labels]


def _has_json_each(conn: sqlite3.Connection) -> bool:
    """True when this SQLite has the JSON functions (built in since 3.38; optional before)."""
    try:
        conn.execute("SELECT count(*) FROM json_each('[0]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


@dataclass(frozen=True)
class StoredPassage:
    """One passage as stored: its HNSW label, the corpus id, title and text."""

    label: int
    id: str
    title: str
    text: str


class PassageStoreWriter:
    """Creates a passage database and fills it in batched transactions.

    Rows are buffered and written ``batch_size`` at a time with ``executemany``. Passage ids must be
    unique (a duplicate raises :class:`~fastdpr.common.errors.CorpusError` naming it) and, by the time
    :meth:`close` runs, the labels must be exactly ``0..n-1`` because they are the HNSW labels.

    Use it as a context manager: on a clean exit the store is checked and closed; if the block raises,
    the pending batch is discarded and the connection closed without further checks.
    """

    def __init__(self, path: str | Path, batch_size: int = DEFAULT_BATCH_SIZE, *,
                 copy_of: str | Path | None = None) -> None:
        """``copy_of``: start from a copy of that store (its file copied whole, so passages are added after
        its labels); the copy is refused unless it has this schema version."""
        self.path = Path(path)
        if self.path.exists():
            # Never append to or clobber an existing store: builds happen in a fresh staging directory.
            raise FastDPRError(f"passage store {self.path} already exists")
        if batch_size < 1:
            raise FastDPRError(f"batch_size must be at least 1, got {batch_size}")
        self._batch_size = batch_size
        self._pending: list[Row] = []
        self._written = 0
        if copy_of is not None:
            # A file copy (in the kernel: copy_file_range/sendfile) instead of re-inserting every row and
            # rebuilding the id index: what makes an append's store cost a copy, not a rebuild.
            shutil.copyfile(copy_of, self.path)
        self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None)
        # journal_mode=MEMORY (not OFF): nearly as fast, but ROLLBACK still works, which a failed
        # batch needs. synchronous=OFF: a crash only loses a staging directory that is discarded anyway.
        # Neither setting is persistent in the file, so readers see an ordinary rollback-journal
        # database (WAL would be persistent and make read-only opens need a writable directory).
        self._conn.execute("PRAGMA journal_mode=MEMORY")
        self._conn.execute("PRAGMA synchronous=OFF")
        if copy_of is None:
            self._conn.execute(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return
        try:
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version != SCHEMA_VERSION:
                raise IndexLoadError(f"passage store {copy_of} has schema version {version}, expected "
                                     f"{SCHEMA_VERSION}")
            (count,) = self._conn.execute("SELECT count(*) FROM passages").fetchone()
        except (sqlite3.Error, IndexLoadError) as exc:
            self._abort()
            raise IndexLoadError(f"cannot extend passage store {copy_of}: {exc}") from exc
        self._written = int(count)

    def __enter__(self) -> PassageStoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    @property
    def written(self) -> int:
        """Rows committed so far (buffered rows not included)."""
        return self._written

    def copy_from(self, source: Path, drop: Iterable[int]) -> int:
        """Copy every passage of the store at ``source`` except the labels ``drop``, renumbered
        ``0..n-1`` in label order (what an index update keeps of its previous version); the number copied.

        Must come before any :meth:`add`. Done inside SQLite (ATTACH + INSERT ... SELECT), so a store of
        millions of passages is copied without a row passing through Python.
        """
        conn = self._connection()
        if self._pending or self._written:
            raise FastDPRError(f"passage store {self.path}: copy_from must come before any passage is added")
        conn.execute("ATTACH DATABASE ? AS old", (Path(source).resolve().as_uri() + "?mode=ro",))
        try:
            conn.execute("BEGIN")
            conn.execute("CREATE TEMP TABLE dropped (label INTEGER PRIMARY KEY)")
            conn.executemany("INSERT INTO temp.dropped VALUES (?)", ((operator.index(label),) for label in drop))
            conn.execute("INSERT INTO passages (label, id, title, text) "
                         "SELECT row_number() OVER (ORDER BY label) - 1, id, title, text FROM old.passages "
                         "WHERE label NOT IN (SELECT label FROM temp.dropped) ORDER BY label")
            (copied,) = conn.execute("SELECT count(*) FROM passages").fetchone()
            conn.execute("DROP TABLE temp.dropped")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise IndexLoadError(f"cannot copy passage store {source}: {exc}") from exc
        finally:
            conn.execute("DETACH DATABASE old")
        self._written = int(copied)
        return self._written

    def add(self, label: int, id: str, title: str, text: str) -> None:
        """Buffers one passage; the buffer is written when it reaches ``batch_size`` rows."""
        self._pending.append((int(label), id, title, text))
        if len(self._pending) >= self._batch_size:
            self.flush()

    def add_many(self, rows: Iterable[tuple[int, str, str, str]]) -> None:
        """Buffers ``(label, id, title, text)`` rows, writing full batches as they fill."""
        for label, pid, title, text in rows:
            self.add(label, pid, title, text)

    def flush(self) -> None:
        """Writes the buffered rows in one transaction."""
        conn = self._connection()
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO passages (label, id, title, text) VALUES (?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            raise self._explain_conflict(conn, rows, exc) from exc
        self._written += len(rows)

    def close(self) -> None:
        """Writes what is buffered, checks that labels are ``0..n-1``, and closes the database."""
        if self._conn is None:
            return
        try:
            self.flush()
            count, low, high = self._conn.execute(
                "SELECT count(*), min(label), max(label) FROM passages"
            ).fetchone()
            if count and (low != 0 or high != count - 1):
                raise FastDPRError(
                    f"passage labels must be 0..{count - 1} (the HNSW labels), found {low}..{high}"
                )
        finally:
            self._conn.close()
            self._conn = None

    def _abort(self) -> None:
        self._pending = []
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise FastDPRError(f"passage store {self.path} is already closed")
        return self._conn

    @staticmethod
    def _explain_conflict(
        conn: sqlite3.Connection, rows: list[Row], exc: sqlite3.IntegrityError
    ) -> CorpusError:
        # executemany does not say which row failed; re-scan the (rolled back) batch so the user gets
        # the offending passage id or label instead of a bare SQLite constraint name.
        seen_ids: set[str] = set()
        seen_labels: set[int] = set()
        for label, pid, _title, _text in rows:
            in_db = conn.execute("SELECT label FROM passages WHERE id = ?", (pid,)).fetchone()
            if pid in seen_ids or in_db is not None:
                return CorpusError(f"duplicate passage id {pid!r} (label {label})")
            if (
                label in seen_labels
                or conn.execute("SELECT 1 FROM passages WHERE label = ?", (label,)).fetchone()
            ):
                return CorpusError(f"duplicate passage label {label} (id {pid!r})")
            seen_ids.add(pid)
            seen_labels.add(label)
        return CorpusError(f"passage rows rejected by the store: {exc}")


class PassageStore:
    """Read-only access to a passage database, safe to share between threads.

    Thread safety: one connection opened with ``check_same_thread=False`` and guarded by a lock,
    rather than a connection per thread. A lookup of ``k`` labels by primary key takes well under a
    millisecond, far less than encoding the question that precedes it, so serializing lookups costs
    nothing measurable; in exchange :meth:`close` really closes the one file handle (per-thread
    connections could only be closed by the threads that own them, leaking handles when an index is
    reloaded), and no connection outlives the store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise IndexLoadError(f"passage store {self.path} is missing")
        # immutable=1: the store is never written after it is published (an update writes a new file
        # in a new directory), so SQLite may skip the file locks and change checks it would otherwise
        # make around every statement. mmap_size: pages are read from a memory map of the file instead
        # of copied by read() calls. With the JSON lookup below, 100 passages of a 200k-passage store
        # came back 1.4x faster after 20 ms idle and 1.7x back to back than before issue #21
        # (benchmarks/results/query-x86-avx512-vnni/store-fetch/).
        uri = self.path.resolve().as_uri() + "?mode=ro&immutable=1"
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise IndexLoadError(f"cannot open passage store {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        self._count: int | None = None
        self._memory: list[PassageText] | None = None  # see load_into_memory
        try:
            # SQLite opens lazily: the first statement is what notices a file that is not a database.
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            columns = [row[1] for row in self._conn.execute("PRAGMA table_info(passages)")]
            self._conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
            self._json_lookup = _has_json_each(self._conn)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise IndexLoadError(
                f"passage store {self.path} is corrupt or not a SQLite database: {exc}"
            ) from exc
        if columns != ["label", "id", "title", "text"] or version != SCHEMA_VERSION:
            self._conn.close()
            raise IndexLoadError(
                f"passage store {self.path} has an unsupported layout (schema version {version}, "
                f"expected {SCHEMA_VERSION}); rebuild the index"
            )

    def __enter__(self) -> PassageStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def count(self) -> int:
        """Number of passages in the store (computed once, the store never changes)."""
        if self._count is None:
            with self._lock:
                (self._count,) = self._fetch("SELECT count(*) FROM passages", ())[0]
        return self._count

    def labels_of(self, ids: Iterable[str]) -> dict[str, int]:
        """The labels of those of ``ids`` that the store holds (ids it lacks are left out)."""
        with self._lock:
            return {pid: int(label) for pid, label in self._select_in("id, label", "id", list(dict.fromkeys(ids)))}

    def get(self, labels: Iterable[SupportsIndex]) -> list[StoredPassage]:
        """The passages with these labels (ints or an integer array), in the given order (repeats allowed).

        Raises :class:`~fastdpr.common.errors.IndexLoadError` if a label is not in the store: labels come from
        the vector index, so a miss means the index and the store do not belong together.
        """
        wanted = _labels(labels)
        return [StoredPassage(label, *row) for label, row in zip(wanted, self._rows(wanted), strict=True)]

    def texts(self, labels: Iterable[SupportsIndex]) -> list[PassageText]:
        """As :meth:`get`, without the labels: ``(id, title, text)`` tuples, the light form a search's
        hits are made from (one object fewer per hit)."""
        wanted = _labels(labels)
        memory = self._memory
        if memory is not None and (not wanted or min(wanted) >= 0):  # a negative index would wrap around
            try:
                return [memory[label] for label in wanted]
            except IndexError:
                pass  # a label the store lacks: the lookup below names it
        return self._rows(wanted)

    def load_into_memory(self) -> None:
        """Read every passage into this process's memory; lookups then never touch SQLite.

        Measured on a 200k-passage store after 20 ms idle (benchmarks/results/query-x86-avx512-vnni/store-fetch/):
        100 passages in 0.137 ms instead of 0.517 ms. It costs memory: about the store's size again, per
        process (Python strings), which is why it is asked for (``Retriever.load(passages_in_memory=True)``)
        and not the default: a DPR-sized store is tens of GB.
        """
        with self._lock:
            rows = self._fetch("SELECT id, title, text FROM passages ORDER BY label", ())
        self._memory = rows

    def _rows(self, wanted: list[int]) -> list[PassageText]:
        if not wanted:
            return []
        if len(wanted) > _DEDUPLICATE_ABOVE:
            # A batch of questions retrieves the same passages again and again (10,570 SQuAD questions x 100
            # hits: 1,057,000 labels, 2,067 distinct): read each passage once and share its strings.
            unique = list(dict.fromkeys(wanted))
            if len(unique) < len(wanted):
                by_label = dict(zip(unique, self._rows(unique), strict=True))
                return [by_label[label] for label in wanted]
        with self._lock:
            if self._json_lookup:
                # One statement for any number of labels: the labels travel as one JSON array, and the
                # join returns a row per array element in array order (repeats included), so nothing
                # is reordered in Python, and there is no host-parameter limit. On one connection
                # (immutable, memory-mapped) it fetched 100 of 200k passages ~1.4x faster than
                # "label IN (?, ...)" plus a dict (measured by hand, back to back; no result file).
                rows = self._fetch(_JSON_LOOKUP, (json.dumps(wanted),))
            else:
                rows = self._fetch_in_chunks(wanted)
        if len(rows) != len(wanted):
            found = self._present(wanted)
            missing = [label for label in dict.fromkeys(wanted) if label not in found]
            raise IndexLoadError(
                f"labels {missing[:10]} are not in passage store {self.path}: "
                "the vector index and the passage store do not match"
            )
        return rows  # rows of the three TEXT columns

    def _select_in(self, columns: str, key: str, values: Sequence[object]) -> list[tuple[Any, ...]]:
        # "SELECT columns ... WHERE key IN (...)" per chunk of at most _MAX_PARAMS values (older SQLite
        # builds cap host parameters). Caller holds self._lock.
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), _MAX_PARAMS):
            chunk = values[start : start + _MAX_PARAMS]
            rows.extend(self._fetch(f"SELECT {columns} FROM passages WHERE {key} IN ({','.join('?' * len(chunk))})",
                                    chunk))
        return rows

    def _fetch_in_chunks(self, wanted: list[int]) -> list[tuple[Any, ...]]:
        # Without SQLite's JSON functions: "label IN (...)" per chunk, put back in the asked order.
        # Caller holds self._lock.
        found = {row[0]: row[1:] for row in self._select_in("label, id, title, text", "label",
                                                            list(dict.fromkeys(wanted)))}
        return [found[label] for label in wanted if label in found]

    def _present(self, wanted: list[int]) -> set[int]:
        # Only after a lookup came back short: which of the labels the store holds.
        with self._lock:
            return {row[0] for row in self._select_in("label", "label", list(dict.fromkeys(wanted)))}

    def close(self) -> None:
        """Closes the database; later calls raise :class:`~fastdpr.common.errors.FastDPRError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        # Caller holds self._lock. fetchall inside the try: a damaged page is only noticed while
        # stepping through rows, not when the statement is prepared.
        if self._conn is None:
            raise FastDPRError(f"passage store {self.path} is closed")
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise IndexLoadError(f"passage store {self.path} cannot be read: {exc}") from exc
