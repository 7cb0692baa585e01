"""Remote locations mirrored into the cache: fresh when the source changed, shared between processes."""

from __future__ import annotations

import logging
import multiprocessing
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from srpo import io
from srpo.io import resolve_local


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def memfs():
    """The process-wide in-memory filesystem, under a fresh root; removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/io-{uuid.uuid4().hex[:8]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def count_downloads(fs, monkeypatch) -> list[str]:
    """Patch ``fs.get`` to record each call (the remote path) before delegating."""
    calls, get = [], fs.get
    monkeypatch.setattr(fs, "get", lambda rpath, *a, **k: (calls.append(rpath), get(rpath, *a, **k))[1])
    return calls


def test_a_changed_remote_file_is_seen_on_the_next_resolve(cache, memfs):
    fs, root = memfs
    fs.pipe(f"{root}/prompts.txt", b"a cat\n")
    first = resolve_local(f"memory://{root}/prompts.txt")
    assert first.name == "prompts.txt" and first.read_text() == "a cat\n"
    time.sleep(0.002)  # the memory filesystem's change mark is its creation time (microseconds)
    fs.pipe(f"{root}/prompts.txt", b"a dog\n")  # same size, new content
    second = resolve_local(f"memory://{root}/prompts.txt")
    assert second.read_text() == "a dog\n"
    assert first.read_text() == "a cat\n"  # the previous copy stays for readers that may still hold it
    time.sleep(0.002)
    fs.pipe(f"{root}/prompts.txt", b"a cow\n")
    assert resolve_local(f"memory://{root}/prompts.txt").read_text() == "a cow\n"
    assert not first.exists() and second.exists()  # older copies are removed, not kept forever


def test_a_folder_with_an_added_file_is_seen_on_the_next_resolve(cache, memfs):
    fs, root = memfs
    fs.pipe(f"{root}/returned/a.json", b"{}")
    first = resolve_local(f"memory://{root}/returned/")
    assert sorted(p.name for p in first.iterdir()) == ["a.json"]
    fs.pipe(f"{root}/returned/b.json", b"[]")
    second = resolve_local(f"memory://{root}/returned/")
    assert second.name == "returned"
    assert sorted(p.name for p in second.iterdir()) == ["a.json", "b.json"]


def test_an_unchanged_remote_folder_is_downloaded_once(cache, memfs, monkeypatch):
    fs, root = memfs
    fs.pipe({f"{root}/model/config.json": b"{}", f"{root}/model/sub/weights.bin": b"\0" * 64})
    downloads = count_downloads(fs, monkeypatch)
    first = resolve_local(f"memory://{root}/model")
    second = resolve_local(f"memory://{root}/model")
    assert first == second and len(downloads) == 1
    assert (second / "sub" / "weights.bin").read_bytes() == b"\0" * 64


def test_without_change_marks_every_resolve_downloads_again(cache, memfs, monkeypatch):
    fs, root = memfs
    fs.pipe(f"{root}/key.json", b'{"v": 1}')
    monkeypatch.setattr(io, "_CHANGE_MARKS", ())  # a filesystem that reports sizes only
    downloads = count_downloads(fs, monkeypatch)
    assert resolve_local(f"memory://{root}/key.json").read_text() == '{"v": 1}'
    fs.pipe(f"{root}/key.json", b'{"v": 2}')  # same size: only a new download can tell
    assert resolve_local(f"memory://{root}/key.json").read_text() == '{"v": 2}'
    assert len(downloads) == 2


def test_an_unreachable_source_falls_back_to_the_mirrored_copy(cache, memfs, monkeypatch, caplog):
    fs, root = memfs
    fs.pipe(f"{root}/model/config.json", b"{}")
    cached = resolve_local(f"memory://{root}/model")
    monkeypatch.setattr(logging.getLogger("srpo"), "propagate", True)  # steps' logging may have turned it off

    def unreachable(*args, **kwargs):
        raise ConnectionError("endpoint down")

    monkeypatch.setattr(fs, "info", unreachable)
    assert resolve_local(f"memory://{root}/model") == cached
    assert "cannot reach" in caplog.text and "endpoint down" in caplog.text
    with pytest.raises(ConnectionError):  # nothing mirrored yet: the error stands
        resolve_local(f"memory://{root}/other")


def test_a_missing_remote_location_names_the_url(cache, memfs):
    _, root = memfs
    with pytest.raises(FileNotFoundError, match=f"memory://{root}/nothing"):
        resolve_local(f"memory://{root}/nothing")


def test_an_old_style_cache_entry_is_replaced(cache, memfs):
    """A mirror made before change marks (``remote/<hash>/<name>`` + ``.complete``) is not trusted."""
    fs, root = memfs
    url = f"memory://{root}/prompts.txt"
    fs.pipe(f"{root}/prompts.txt", b"new\n")
    old = io._url_slot(url) / "prompts.txt"
    old.parent.mkdir(parents=True)
    old.write_text("old\n")
    (old.parent / ".complete").touch()
    assert resolve_local(url).read_text() == "new\n"
    assert not old.exists()


def _slow_mirror(url: str, barrier, results) -> None:
    """Child process: wait for the sibling, then mirror ``url`` with a slow download; report the result."""
    from fsspec.implementations.local import LocalFileSystem

    get, downloads = LocalFileSystem.get, []

    def slow_get(self, *args, **kwargs):
        downloads.append(args[0])
        time.sleep(0.5)  # long enough for the sibling to arrive while this copy is being made
        return get(self, *args, **kwargs)

    LocalFileSystem.get = slow_get
    try:
        barrier.wait(timeout=60)
        path = io._mirror_remote(url)
        files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        results.put(("ok", str(path), files, len(downloads)))
    except BaseException as err:  # noqa: BLE001 -- reported to the parent, which fails the test with it
        results.put(("error", repr(err), [], len(downloads)))


def test_two_processes_mirroring_one_url_at_once_share_one_download(cache, tmp_path):
    source = tmp_path / "remote-model"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "weights.bin").write_bytes(b"\1" * 1024)
    url = source.as_uri()  # file:// through the remote code path: fsspec's local filesystem
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_slow_mirror, args=(url, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [o[0] for o in out] == ["ok", "ok"], out
    assert out[0][1] == out[1][1]  # the same local copy
    assert out[0][2] == out[1][2] == ["config.json", "sub/weights.bin"]
    assert sum(o[3] for o in out) == 1  # one process downloaded, the other waited and reused it
    assert Path(out[0][1]).is_relative_to(cache)


def test_csv_cells_never_become_spreadsheet_formulas():
    import csv
    from io import StringIO

    from srpo.io import csv_text

    rows = [{"prompt": "=HYPERLINK(\"http://x\")", "score": 0.123456789, "delta": -0.5, "note": None},
            {"prompt": "@SUM(A1)", "score": float("nan"), "delta": 1.0, "note": "-1+2"},
            {"prompt": "a red circle", "score": 1.0, "delta": 0.0, "note": "fine"}]
    parsed = list(csv.DictReader(StringIO(csv_text(rows, ["prompt", "score", "delta", "note"]))))
    assert [r["prompt"] for r in parsed] == ["'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "a red circle"]
    assert [r["note"] for r in parsed] == ["", "'-1+2", "fine"]
    assert [r["score"] for r in parsed] == ["0.123457", "nan", "1"]
    assert [r["delta"] for r in parsed] == ["-0.5", "1", "0"]  # numbers stay numbers
    assert csv_text([]) == ""


@pytest.mark.parametrize("location, hub", [
    ("org/model", True), ("yuvalkirstain/PickScore_v1", True), ("bert-base-uncased", True),  # legacy: no org
    ("google/siglip-so400m-patch14-384", True), ("a/b/c", False), ("./model", False), ("/data/model", False),
    ("~/model", False), ("s3://bucket/model", False), ("org/model name", False), ("", False),
])
def test_one_hub_id_rule(location, hub):
    assert io.is_hub_id(location) is hub


def test_model_locations_resolve_to_a_folder_a_hub_id_or_an_error(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    assert io.resolve_model_location(str(folder)) == folder
    assert io.resolve_model_location(f"file://{folder}") == folder
    assert io.resolve_model_location("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.resolve_model_location(str(tmp_path / "missing" / "x"))


def test_file_urls_are_local_paths():
    assert io.strip_file_scheme("file:///data/x") == "/data/x"
    assert io.strip_file_scheme("/data/x") == "/data/x" and io.strip_file_scheme("s3://b/x") == "s3://b/x"
    assert not io.is_url("file:///data/x") and io.is_url("s3://b/x")


def test_build_once_builds_a_missing_folder_once(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "done").write_text("1")

    target = tmp_path / "built"
    assert io.build_once(target, build) == target and io.build_once(target, build) == target
    assert len(calls) == 1 and (target / "done").read_text() == "1"
