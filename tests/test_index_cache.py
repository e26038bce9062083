"""The tar shard index kept beside the shards (tinyclip.shards.load_or_build_index, used by TarShards).

Checks: the index loaded from the cache file equals the built one field by field (keys, arrays, skips);
a second open reads the file without scanning a shard; rewriting a shard, or naming another shard list,
rebuilds, and the new index reflects the new content; a garbage cache file is rebuilt, not an error;
a shard folder that cannot be written keeps the index in the user's cache folder, and where nothing can be
written the index is still built (one line on stderr, no cache file).
"""

import os
import shutil
import tarfile
from collections import Counter

import numpy as np
import pytest

from tinyclip import shards
from tinyclip.sources import open_source


def samples(n, first=0):
    """n (source key, image bytes, extension, captions) samples; the index never decodes the image."""
    return [(f"s{i}", bytes([i % 256]) * 40, "jpg", [f"caption {i}"]) for i in range(first, first + n)]


def cache_files(folder):
    return [name for name in os.listdir(folder) if name.startswith(".tinyclip-index-")]


def no_scan(path):
    raise AssertionError(f"scanned {path} although its index is cached")


def assert_same_index(a, b):
    assert a.shards == b.shards and a.keys == b.keys and type(a.keys[0]) is str
    for name in ("shard", "image", "text"):
        assert getattr(a, name).dtype == getattr(b, name).dtype
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.skipped == b.skipped and isinstance(a.skipped, Counter)


@pytest.fixture
def paths(tmp_path):
    """3 shards of 4, 4 and 2 samples, the last with a repeated key and a member without a caption."""
    paths = shards.write_shards(samples(10), str(tmp_path / "shards"), shard_size=4)
    with tarfile.open(paths[-1], "a") as tar:
        shards._add_member(tar, "000020.jpg", b"again")  # the shard's first key, repeated
        shards._add_member(tar, "lonely.jpg", b"no caption")
    return paths


def test_loaded_index_equals_built_index(paths):
    built = shards.build_index(paths, processes=1)
    assert built.skipped == Counter(duplicate_key=1, missing_caption=1) and len(built.keys) == 10
    first = shards.load_or_build_index(paths)  # builds and writes the file
    assert cache_files(os.path.dirname(paths[0])) == [os.path.basename(shards.index_cache_paths(paths)[0])]
    assert_same_index(first, built)
    assert_same_index(shards.load_or_build_index(paths), built)  # read back from the file


def test_second_open_does_not_rescan(paths, monkeypatch):
    spec = os.path.join(os.path.dirname(paths[0]), "*.tar")
    keys = open_source(spec).keys
    monkeypatch.setattr(shards, "scan_shard", no_scan)
    source = open_source(spec)
    assert source.keys == keys and source.read(3)[1] == ["caption 3"]


def test_changed_shard_or_shard_list_rebuilds(paths, tmp_path, monkeypatch):
    before = shards.load_or_build_index(paths)
    replacement = shards.write_shards(samples(10, first=100), str(tmp_path / "other"), shard_size=5)[1]
    shutil.copyfile(replacement, paths[1])  # shard 1 now holds keys 000010..000014, with longer captions
    os.utime(paths[1], ns=(1, 1))  # and an mtime unlike the cached one, whatever the clock's resolution
    after = shards.load_or_build_index(paths)
    assert after.keys[4:9] == [f"00001{i}" for i in range(5)] and len(after.keys) == len(before.keys) + 1
    assert (after.text[4:8, 1] == before.text[4:8, 1] + 2).all()  # "caption 105" where "caption 5" was
    assert_same_index(after, shards.build_index(paths, processes=1))
    monkeypatch.setattr(shards, "scan_shard", no_scan)
    assert_same_index(shards.load_or_build_index(paths), after)  # the rewritten file is the new index
    monkeypatch.undo()
    subset = shards.load_or_build_index(paths[:2])  # another list: its own file, not the full list's index
    assert subset.shards == paths[:2] and len(subset.keys) == 9
    assert len(cache_files(os.path.dirname(paths[0]))) == 2


def test_garbage_cache_file_is_rebuilt(paths):
    built = shards.load_or_build_index(paths)
    cache = shards.index_cache_paths(paths)[0]
    for garbage in (b"not an npz at all", open(cache, "rb").read()[:300]):  # garbage, then a truncated file
        with open(cache, "wb") as f:
            f.write(garbage)
        assert_same_index(shards.load_or_build_index(paths), built)
        assert_same_index(shards.load_or_build_index(paths), built)  # and the file was rewritten whole


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """The user's cache folder, where the index goes when the shards' folder cannot be written."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tinyclip"


def refusing(folder):
    """atomic_write as in a folder that cannot be written (chmod would not stop root, who runs CI here)."""
    real = shards.atomic_write

    def atomic_write(path, mode="wb"):
        if os.path.dirname(os.path.abspath(path)).startswith(str(folder)):
            raise PermissionError(13, "Permission denied", path)
        return real(path, mode)
    return atomic_write


def test_read_only_folder_keeps_its_index_in_the_user_cache(paths, user_cache, capsys, monkeypatch):
    folder = os.path.dirname(paths[0])
    monkeypatch.setattr(shards, "atomic_write", refusing(folder))
    built = shards.load_or_build_index(paths)
    assert_same_index(built, shards.build_index(paths, processes=1))
    assert cache_files(folder) == []
    assert cache_files(user_cache) == [os.path.basename(shards.index_cache_paths(paths)[1])]
    assert "not cached" not in capsys.readouterr().err
    monkeypatch.setattr(shards, "scan_shard", no_scan)  # the next run reads it from there
    assert_same_index(shards.load_or_build_index(paths), built)


def test_nowhere_to_write_still_indexes(paths, user_cache, capsys, monkeypatch):
    """Neither folder can be written: the index is built in memory, with one line on stderr naming both."""
    monkeypatch.setattr(shards, "atomic_write", refusing("/"))
    index = shards.load_or_build_index(paths)
    assert_same_index(index, shards.build_index(paths, processes=1))
    assert cache_files(os.path.dirname(paths[0])) == [] and cache_files(user_cache) == []
    err = capsys.readouterr().err
    assert err.count("Permission denied") == 2 and "not cached" in err and str(user_cache) in err
