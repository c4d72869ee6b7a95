"""The SQLite passage store: round trip, order, constraints, load errors, concurrent readers."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fastdpr.common.errors import CorpusError, FastDPRError, IndexLoadError
from fastdpr.index.store import PassageStore, PassageStoreWriter, StoredPassage

ROWS = [
    (0, "wiki:1", "Zürich", "Zürich is the largest city in Switzerland."),
    (1, "wiki:2", "", "A passage without a title."),
    (2, "wiki:3", "東京", "東京は日本の首都です。 emoji 🚀 and a tab\tinside"),
    (3, "wiki:4", "Quotes", "It's \"quoted\" -- with 'both' kinds; DROP TABLE passages;"),
]


def _build(path: Path, rows: list[tuple[int, str, str, str]], batch_size: int = 3) -> Path:
    with PassageStoreWriter(path, batch_size=batch_size) as writer:
        writer.add_many(rows)
    return path


def test_round_trip_keeps_unicode_and_empty_title(tmp_path: Path) -> None:
    path = _build(tmp_path / "passages.sqlite", ROWS)
    with PassageStore(path) as store:
        assert store.count() == len(ROWS)
        assert store.get([0, 1, 2, 3]) == [StoredPassage(*row) for row in ROWS]


def test_get_preserves_order_repeats_and_accepts_numpy_labels(tmp_path: Path) -> None:
    path = _build(tmp_path / "passages.sqlite", ROWS)
    with PassageStore(path) as store:
        # Searchers return int64 arrays; sqlite3 rejects numpy integers unless the store converts them.
        labels = np.array([3, 0, 2, 0], dtype=np.int64)
        assert [p.label for p in store.get(labels)] == [3, 0, 2, 0]
        assert [p.id for p in store.get([2, 1])] == ["wiki:3", "wiki:2"]
        assert store.get([]) == []


def test_get_many_labels_beyond_sqlite_parameter_limit(tmp_path: Path) -> None:
    rows = [(i, f"p{i}", f"t{i}", f"text {i}") for i in range(2500)]
    path = _build(tmp_path / "passages.sqlite", rows, batch_size=1000)
    with PassageStore(path) as store:
        wanted = list(range(2499, -1, -1))
        assert [p.label for p in store.get(wanted)] == wanted


def test_writer_batches_rows_added_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "passages.sqlite"
    with PassageStoreWriter(path, batch_size=2) as writer:
        for row in ROWS:
            writer.add(*row)
        assert writer.written == 4  # two full batches already committed
    with PassageStore(path) as store:
        assert store.count() == 4


@pytest.mark.parametrize("batch_size", [2, 100])
def test_duplicate_passage_id_is_rejected_by_name(tmp_path: Path, batch_size: int) -> None:
    # batch_size 2: the duplicate meets a row of an earlier, committed batch; 100: of the same batch.
    rows = [*ROWS, (4, "wiki:2", "again", "duplicate id")]
    writer = PassageStoreWriter(tmp_path / "passages.sqlite", batch_size=batch_size)
    with pytest.raises(CorpusError, match="duplicate passage id 'wiki:2'"):
        writer.add_many(rows)
        writer.close()


def test_duplicate_label_is_rejected(tmp_path: Path) -> None:
    with (
        pytest.raises(CorpusError, match="duplicate passage label 1"),
        PassageStoreWriter(tmp_path / "passages.sqlite") as writer,
    ):
        writer.add_many([*ROWS, (1, "wiki:9", "t", "x")])


def test_labels_must_be_contiguous_from_zero(tmp_path: Path) -> None:
    with (
        pytest.raises(FastDPRError, match=r"labels must be 0\.\.1"),
        PassageStoreWriter(tmp_path / "passages.sqlite") as writer,
    ):
        writer.add_many([(0, "a", "", "x"), (5, "b", "", "y")])


def test_writer_refuses_existing_file(tmp_path: Path) -> None:
    path = _build(tmp_path / "passages.sqlite", ROWS)
    with pytest.raises(FastDPRError, match="already exists"):
        PassageStoreWriter(path)


def test_missing_store_is_index_load_error(tmp_path: Path) -> None:
    with pytest.raises(IndexLoadError, match="missing"):
        PassageStore(tmp_path / "nope.sqlite")


def test_garbage_file_is_index_load_error(tmp_path: Path) -> None:
    path = tmp_path / "passages.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexLoadError, match="corrupt or not a SQLite database"):
        PassageStore(path)


def test_foreign_sqlite_database_is_index_load_error(tmp_path: Path) -> None:
    path = tmp_path / "passages.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE other (x INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(IndexLoadError, match="unsupported layout"):
        PassageStore(path)


def test_unknown_label_is_index_load_error(tmp_path: Path) -> None:
    path = _build(tmp_path / "passages.sqlite", ROWS)
    with PassageStore(path) as store, pytest.raises(IndexLoadError, match="do not match"):
        store.get([1, 99])


def test_store_is_read_only_and_closed_store_raises(tmp_path: Path) -> None:
    path = _build(tmp_path / "passages.sqlite", ROWS)
    store = PassageStore(path)
    assert store._conn is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._conn.execute("DELETE FROM passages")
    store.close()
    store.close()  # idempotent
    with pytest.raises(FastDPRError, match="closed"):
        store.get([0])


def test_eight_threads_read_the_same_results(tmp_path: Path) -> None:
    rows = [(i, f"p{i}", f"title {i}", f"text {i} " * (i % 7)) for i in range(3000)]
    path = _build(tmp_path / "passages.sqlite", rows, batch_size=500)
    rng = np.random.default_rng(0)
    requests = [rng.integers(0, len(rows), size=20).tolist() for _ in range(400)]
    with PassageStore(path) as store:
        expected = [store.get(labels) for labels in requests]
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(store.get, requests))
    assert got == expected
    assert all(p == StoredPassage(*rows[p.label]) for batch in got for p in batch)


@pytest.mark.parametrize("json_lookup", [True, False])
def test_texts_and_get_agree_in_order_with_and_without_sqlite_json(tmp_path: Path, json_lookup: bool) -> None:
    rows = [(i, f"p{i}", f"title {i}", f"text {i}") for i in range(2000)]
    path = _build(tmp_path / "passages.sqlite", rows, batch_size=500)
    with PassageStore(path) as store:
        store._json_lookup = json_lookup  # the fallback for SQLite builds without JSON functions
        wanted = np.array([1999, 0, 7, 7, 1500, *range(1000)], dtype=np.int64)
        assert store.texts(wanted) == [rows[i][1:] for i in wanted.tolist()]
        assert store.get(wanted) == [StoredPassage(*rows[i]) for i in wanted.tolist()]
        assert store.texts([]) == []
        with pytest.raises(IndexLoadError, match=r"labels \[2000, 5000\] are not in"):
            store.texts([3, 2000, 3, 5000, 2000])
        # A batch of questions' hits: many labels, few distinct (each read once), in order, repeats kept.
        hits = np.tile(np.array([5, 3, 1999, 5], dtype=np.int64), 3000)
        assert store.texts(hits) == [rows[i][1:] for i in hits.tolist()]
        assert store.get(hits) == [StoredPassage(*rows[i]) for i in hits.tolist()]
        with pytest.raises(IndexLoadError, match=r"labels \[2000\] are not in"):
            store.texts([*hits.tolist(), 2000, 2000])


def test_store_reads_through_sqlite_json_here(tmp_path: Path) -> None:
    """The fast lookup is the one this Python's SQLite takes (JSON functions: built in since 3.38)."""
    with PassageStore(_build(tmp_path / "passages.sqlite", ROWS)) as store:
        assert store._json_lookup or sqlite3.sqlite_version_info < (3, 38)


def test_passages_in_memory_answer_as_the_store_does(tmp_path: Path) -> None:
    rows = [(i, f"p{i}", f"title {i}", f"text {i}") for i in range(50)]
    with PassageStore(_build(tmp_path / "passages.sqlite", rows)) as store:
        wanted = np.array([49, 0, 7, 7], dtype=np.int64)
        from_sqlite = store.texts(wanted)
        store.load_into_memory()
        assert store.texts(wanted) == from_sqlite == [rows[i][1:] for i in wanted.tolist()]
        assert store.texts([]) == []
        for bad in ([3, 50], [-1]):  # beyond the end, and negative (a list would wrap around)
            with pytest.raises(IndexLoadError, match="not in passage store"):
                store.texts(bad)
