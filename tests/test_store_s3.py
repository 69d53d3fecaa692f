"""Results and the dense-checkpoint cache on a real S3-compatible server (moto's server mode, on loopback).

The locations are ``s3://bucket/prefix?endpoint_override=127.0.0.1:PORT&scheme=http&region=us-east-1`` URIs,
credentials in ``AWS_*`` variables: what a user passes for their own object store.
"""
from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
from pathlib import Path

import pytest
from results_fixtures import row
from s3_server import objects

from oba.cli import main
from oba.report import load_results
from oba.store.compaction import compact
from oba.store.results import ResultStore, StoredRows, filesystem
from oba.training.checkpoints import checkpoint_key, dense_checkpoint
from oba.training.train import Recipe

FAST = Recipe(epochs=1, batch_size=64, lr=0.05, seed=0)


def test_results_round_trip_compact_and_read_by_every_reader_on_s3(s3_location: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(s3_location)
    failed = row(seed=0, status="error", error="boom", final_acc=None)
    store.write(failed)
    for seed in (1, 2, 3):
        store.write(row(seed=seed, model=f"m{seed % 2}", final_acc=seed / 10))
    assert sorted(objects(s3_location)) == sorted(f"{c}.parquet" for c in store.statuses())
    assert store.finished() == set(store.statuses()) - {failed["cell_id"]}
    summary = compact(s3_location, settle=0.1)
    assert summary.folded == 4 and summary.cells == 4
    assert not [name for name in objects(s3_location) if "/" not in name]
    store.write({**failed, "status": "ok", "error": None, "final_acc": 0.9})
    table = load_results(s3_location).set_index("cell_id")
    assert len(table) == 4 and table.loc[failed["cell_id"], "final_acc"] == 0.9
    assert sorted(table["final_acc"]) == [0.1, 0.2, 0.3, 0.9]
    assert main(["status", s3_location]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["total", "4", "0"]
    assert main(["check", s3_location, "--baseline", s3_location]) == 0


def test_a_partial_fold_on_s3_takes_only_its_rows_and_stored_rows_finds_them(s3_location: str) -> None:
    store = ResultStore(s3_location)
    rows = [row(seed=seed, final_acc=seed / 10) for seed in range(4)]
    for stored in rows:
        store.write(stored)
    folded = [r["cell_id"] for r in rows[:2]]
    summary = compact(s3_location, settle=0.1, rows=set(folded), merge=False)
    assert summary.folded == 2
    assert sorted(name for name in objects(s3_location) if "/" not in name) == sorted(
        f"{r['cell_id']}.parquet" for r in rows[2:]), "only the folded rows left the top level"
    compact(s3_location, settle=0.1, rows={rows[2]["cell_id"]}, merge=False)
    assert len([name for name in objects(s3_location) if name.startswith("suite=")]) == 2, "two files, side by side"
    lookup = StoredRows(store)
    partition = (rows[0]["suite"], rows[0]["model"], rows[0]["dataset"])
    assert [lookup.get(r["cell_id"], partition)["final_acc"] for r in rows] == [0.0, 0.1, 0.2, 0.3]
    assert sorted(load_results(s3_location)["final_acc"]) == [0.0, 0.1, 0.2, 0.3]


def _make(location: str, queue: mp.Queue) -> None:
    made = dense_checkpoint("vgg-tiny", "synthetic", FAST, 1, location, device="cpu")
    queue.put(made.trained)


def test_dense_checkpoints_are_made_once_and_shared_through_s3(s3_location: str) -> None:
    cache = s3_location.replace("/results?", "/checkpoints?")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    makers = [ctx.Process(target=_make, args=(cache, queue)) for _ in range(2)]
    for maker in makers:
        maker.start()
    trained = sorted(queue.get(timeout=300) for _ in makers)
    for maker in makers:
        maker.join(60)
    assert trained == [False, True], "one maker trained, the other waited on its lease and loaded"
    key = checkpoint_key("vgg-tiny", "synthetic", FAST, 1)
    assert objects(cache) == [f"{key}.json", f"{key}.pt"]
    again = dense_checkpoint("vgg-tiny", "synthetic", FAST, 1, cache, device="cpu")
    fs, root = filesystem(cache)
    with fs.open_input_stream(f"{root}/{key}.pt") as source:
        assert again.weights_sha256 == hashlib.sha256(source.read()).hexdigest()
    assert not again.trained and again.path == f"{root}/{key}.pt"


@pytest.mark.ray
@pytest.mark.slow
def test_a_suite_runs_with_results_and_cache_on_s3(s3_location: str, tmp_path: Path) -> None:
    from oba.suite.cells import expand
    from oba.suite.config import load_suite
    from oba.suite.runner import run_suite
    from suites import tiny_suite

    suite_path = tiny_suite(tmp_path)
    cache = s3_location.replace("/results?", "/cache?")
    log = io.StringIO()
    summary = run_suite(load_suite(suite_path), s3_location, cache_dir=cache, num_cpus=2, stream=log)
    assert (summary.total, summary.ran, summary.failed) == (2, 2, 0), log.getvalue()
    stored = ResultStore(s3_location).read()
    assert sorted(stored["cell_id"]) == sorted(c.cell_id for c in expand(load_suite(suite_path)))
    assert set(stored["status"]) == {"ok"} and "[2/2]" in log.getvalue()
    assert len([name for name in objects(cache) if name.endswith(".pt")]) == 1
    assert not (tmp_path / "cache").exists(), "nothing cached on the local disk"
    assert "_lease.json" not in objects(s3_location), "the run released its lease"
