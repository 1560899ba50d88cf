"""ML-1M / ML-20M-style CSV / RecBole atomic / generic-table loaders and the GroupLens fetch, on tiny fixture files
written in the exact real formats (the network is stubbed at `movielens.download_url`)."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m6rec.data import sources as src
from m6rec.data.sources import grouplens
from m6rec.data.sources import movielens as ml

INTER_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
ITEM_COLUMNS = ["item_id", "title", "year", "genres"]
USER_COLUMNS = ["user_id", "age", "gender", "occupation"]


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _records(df: pd.DataFrame) -> list[list]:
    return df.astype(object).values.tolist()


def _canonical_dtypes(t: src.InteractionTables, age: str = "int64") -> None:
    assert list(t.interactions.columns) == INTER_COLUMNS
    assert t.interactions.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "int64"]
    assert list(t.items.columns[:4]) == ITEM_COLUMNS and str(t.items["item_id"].dtype) == "int64"
    assert list(t.users.columns[:4]) == USER_COLUMNS
    assert t.users[["user_id", "age"]].dtypes.astype(str).tolist() == ["int64", age]


# ----------------------------------------------------------------------------------------------- ML-1M
ML1M_RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::3::2::978299000\n"
ML1M_MOVIES = (
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "3::Café au lait (1994)::Comedy\n"  # latin-1 on disk
    "4::American President, The (1995)::Comedy|Drama|Romance\n"
    "5::Untitled::Drama\n"  # no year
)
ML1M_USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ml-1m"
    _write(root / "ratings.dat", ML1M_RATINGS)
    _write(root / "movies.dat", ML1M_MOVIES, "latin-1")
    _write(root / "users.dat", ML1M_USERS)
    return root


def test_ml1m_parses_exact_values(ml1m_dir: Path):
    t = src.load_ml1m(ml1m_dir)
    _canonical_dtypes(t, age="str")  # ML-1M ages are the README's brackets
    assert _records(t.interactions) == [
        [1, 1193, 5.0, 978300760],
        [1, 661, 3.0, 978302109],
        [2, 1193, 4.0, 978298413],
        [2, 3, 2.0, 978299000],
    ]
    assert _records(t.items) == [
        [1193, "One Flew Over the Cuckoo's Nest", "1975", "Drama"],
        [661, "James and the Giant Peach", "1996", "Animation|Children's|Musical"],
        [3, "Café au lait", "1994", "Comedy"],
        [4, "American President, The", "1995", "Comedy|Drama|Romance"],
        [5, "Untitled", "", "Drama"],
    ]
    assert _records(t.users) == [[1, "under 18", "F", "K-12 student"], [2, "56+", "M", "self-employed"]]
    assert grouplens.ML1M_AGES[25] == "25-34" and len(grouplens.ML1M_AGES) == 7
    assert len(grouplens.ML1M_OCCUPATIONS) == 21 and grouplens.ML1M_OCCUPATIONS[20] == "writer"


def test_ml1m_accepts_crlf_and_a_missing_final_newline(ml1m_dir: Path):
    _write(ml1m_dir / "ratings.dat", ML1M_RATINGS.replace("\n", "\r\n").rstrip())
    assert len(src.load_ml1m(ml1m_dir).interactions) == 4


@pytest.mark.parametrize(
    ("file", "line", "message"),
    [
        ("ratings.dat", "1::661::978302109\n", r"ratings.dat:3: expected 4 '::'-separated fields, saw 3"),
        ("ratings.dat", "1::661::3::978302109::9\n", r"ratings.dat:3: expected 4 '::'-separated fields, saw 5"),
        ("ratings.dat", "\n", r"ratings.dat:3: expected 4 '::'-separated fields, saw 1"),
        ("ratings.dat", "x::661::3::978302109\n", r"ratings.dat:3: column 'user_id' has invalid value 'x'"),
        ("ratings.dat", "1::661::-3::978302109\n", r"ratings.dat:3: column 'rating' must be a number >= 0, got -3$"),
        ("ratings.dat", "1::661::3::later\n", r"ratings.dat:3: column 'timestamp' has invalid value 'later'"),
        ("ratings.dat", "1::999::3::978302109\n", r"ratings.dat:3: unknown item_id 999, not in the item table (movies"),
        ("ratings.dat", "9::661::3::978302109\n", r"ratings.dat:3: unknown user_id 9, not in the user table (users"),
        ("movies.dat", "7::Tab\there (1999)::Drama\n", r"movies.dat:3: unexpected tab character"),
        (
            "movies.dat",
            "661::Duplicate (1996)::Drama\n",
            r"movies.dat:3: duplicate item_id 661 in the item table (first",
        ),
        ("users.dat", "3::M::25::21::12345\n", r"users.dat:3: column 'occupation' has unknown code '21'"),
    ],
)
def test_ml1m_errors_name_file_and_line(ml1m_dir: Path, file: str, line: str, message: str):
    path = ml1m_dir / file
    lines = path.read_bytes().decode("latin-1").splitlines(keepends=True)
    _write(path, "".join(lines[:2] + [line] + lines[2:]), "latin-1")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        src.load_ml1m(ml1m_dir)


def test_ml1m_first_line_too_long_is_reported_at_line_1(ml1m_dir: Path):
    _write(ml1m_dir / "ratings.dat", "1::661::3::978302109::9\n" + ML1M_RATINGS)
    with pytest.raises(ValueError, match=r"ratings.dat:1: expected 4 '::'-separated fields, saw 5"):
        src.load_ml1m(ml1m_dir)


def test_ml1m_missing_file(ml1m_dir: Path):
    (ml1m_dir / "users.dat").unlink()
    with pytest.raises(FileNotFoundError, match=r"users.dat: missing"):
        src.load_ml1m(ml1m_dir)


# ----------------------------------------------------------------------------------------------- ML-20M/25M/latest
ML_RATINGS_CSV = (
    "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,11,0.5,964982224\n2,4,5.0,964983815\n"
)
ML_MOVIES_CSV = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    "3,Grumpier Old Men (1995),Comedy|Romance\n"
    '11,"American President, The (1995)",Comedy|Drama|Romance\n'
    "4,Café au lait (1994),Comedy\n"  # UTF-8 on disk
    "5,Babylon 5,(no genres listed)\n"
    '6,"""Great Performances"" Cats (1998)",Musical\n'
)


@pytest.fixture
def mlcsv_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ml-latest-small"
    _write(root / "ratings.csv", ML_RATINGS_CSV)
    _write(root / "movies.csv", ML_MOVIES_CSV)
    _write(root / "links.csv", "movieId,imdbId,tmdbId\n1,0114709,862\n")  # present in the real zip, unused
    return root


def test_ml_csv_parses_exact_values(mlcsv_dir: Path):
    t = src.load_ml_csv(mlcsv_dir)
    _canonical_dtypes(t)
    assert _records(t.interactions) == [
        [1, 1, 4.0, 964982703],
        [1, 3, 4.5, 964981247],
        [2, 11, 0.5, 964982224],
        [2, 4, 5.0, 964983815],
    ]
    assert _records(t.items) == [
        [1, "Toy Story", "1995", "Adventure|Animation|Children|Comedy|Fantasy"],
        [3, "Grumpier Old Men", "1995", "Comedy|Romance"],
        [11, "American President, The", "1995", "Comedy|Drama|Romance"],
        [4, "Café au lait", "1994", "Comedy"],
        [5, "Babylon 5", "", ""],
        [6, '"Great Performances" Cats', "1998", "Musical"],
    ]
    assert t.users.empty and list(t.users.columns) == USER_COLUMNS


@pytest.mark.parametrize(
    ("file", "line", "message"),
    [
        ("ratings.csv", "1,3,NaN,964981247\n", r"ratings.csv:3: column 'rating' must be a number >= 0, got nan"),
        ("ratings.csv", "1,3,-1.0,964981247\n", r"ratings.csv:3: column 'rating' must be a number >= 0, got -1.0$"),
        ("ratings.csv", "1,3,4.0,soon\n", r"ratings.csv:3: column 'timestamp' has invalid value 'soon'"),
        ("ratings.csv", "u1,3,4.0,964981247\n", r"ratings.csv:3: column 'userId' has invalid value 'u1'"),
        ("ratings.csv", "1,3,4.0,964981247,7\n", r"ratings.csv:3: expected 4 fields, saw 5"),
        ("ratings.csv", "1,999,4.0,964981247\n", r"ratings.csv:3: unknown item_id 999, not in the item table"),
        ("movies.csv", "12,Dracula, Dead and Loving It (1995),Comedy\n", r"movies.csv:3: expected 3 fields, saw 4"),
        ("movies.csv", "x,Heat (1995),Action\n", r"movies.csv:3: column 'movieId' has invalid value 'x'"),
    ],
)
def test_ml_csv_errors_name_file_and_line(mlcsv_dir: Path, file: str, line: str, message: str):
    path = mlcsv_dir / file
    lines = path.read_text().splitlines(keepends=True)
    _write(path, "".join(lines[:2] + [line] + lines[2:]))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        src.load_ml_csv(mlcsv_dir)


def test_ml_csv_missing_column_and_file(mlcsv_dir: Path):
    _write(mlcsv_dir / "ratings.csv", "userId,movieId,rating\n1,1,4.0\n")
    with pytest.raises(ValueError, match=r"ratings.csv:1: missing column\(s\) \['timestamp'\]"):
        src.load_ml_csv(mlcsv_dir)
    (mlcsv_dir / "ratings.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"ratings.csv: missing"):
        src.load_ml_csv(mlcsv_dir)


def test_ml_csv_rejects_non_utf8_bytes_at_their_offset(mlcsv_dir: Path):
    data = ML_MOVIES_CSV.encode("utf-8").replace("Café".encode(), "Café".encode("latin-1"))
    (mlcsv_dir / "movies.csv").write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(ValueError, match=rf"movies.csv: not valid UTF-8 at byte {offset} \(line 5\)"):
        src.load_ml_csv(mlcsv_dir)


def test_load_table_matches_load_ml_csv(mlcsv_dir: Path):
    a = src.load_ml_csv(mlcsv_dir)
    b = src.load_table(
        mlcsv_dir / "ratings.csv",
        {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"},
        item_path=mlcsv_dir / "movies.csv",
        item_columns={"item": "movieId", "title": "title", "genres": "genres"},
    )
    for x, y in ((a.interactions, b.interactions), (a.items, b.items), (a.users, b.users)):
        pd.testing.assert_frame_equal(x, y)


# ----------------------------------------------------------------------------------------------- RecBole atomic
def _write_atomic(root: Path, name: str, inter: str, item: str | None = None, user: str | None = None) -> Path:
    _write(root / f"{name}.inter", inter)
    if item is not None:
        _write(root / f"{name}.item", item)
    if user is not None:
        _write(root / f"{name}.user", user)
    return root


ATOMIC_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
)
ATOMIC_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
)
ATOMIC_USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "196\t49\tM\twriter\t55105\n186\t39\tF\texecutive\t00000\n"
)


def test_atomic_parses_exact_values(tmp_path: Path):
    t = src.load_atomic(_write_atomic(tmp_path, "ml-100k", ATOMIC_INTER, ATOMIC_ITEM, ATOMIC_USER), "ml-100k")
    _canonical_dtypes(t)
    assert _records(t.interactions) == [[196, 242, 3.0, 881250949], [186, 302, 3.0, 891717742]]
    assert _records(t.items) == [
        [242, "Kolya", "1996", "Comedy"],
        [302, "L.A. Confidential", "1997", "Crime|Film-Noir|Mystery|Thriller"],
    ]
    assert _records(t.users) == [[196, 49, "M", "writer", "55105"], [186, 39, "F", "executive", "00000"]]
    assert list(t.users.columns) == [*USER_COLUMNS, "zip_code"]  # unmapped columns kept as text for templates


def test_atomic_implicit_strings_ids_and_config_fields(tmp_path: Path):
    """Amazon-like: string ids, no rating (→ 1.0), no time (→ row order), renamed fields, no user file."""
    inter = (
        "reviewer:token\tasin:token\n"
        "A2SUAM1J3GNN3B\t0000013714\nAZ9XQ0RDVW35C\tB00006HAXW\nA2SUAM1J3GNN3B\tB00006HAXW\n"
    )
    item = (
        "asin:token\ttitle:token_seq\tcategories:token_seq\n0000013714\tRoad Atlas\tBooks Travel\nB00006HAXW\tRock\t\n"
    )
    fields = {"user": "reviewer", "item": "asin", "title": "title", "genres": "categories"}
    t = src.load_atomic(_write_atomic(tmp_path, "amazon", inter, item), "amazon", fields)
    _canonical_dtypes(t)
    assert _records(t.interactions) == [[1, 1, 1.0, 0], [2, 2, 1.0, 1], [1, 2, 1.0, 2]]
    assert _records(t.items) == [[1, "Road Atlas", "", "Books|Travel", "0000013714"], [2, "Rock", "", "", "B00006HAXW"]]
    assert _records(t.users) == [[1, 0, "", "", "A2SUAM1J3GNN3B"], [2, 0, "", "", "AZ9XQ0RDVW35C"]]


def test_atomic_without_item_file_builds_items_from_ids(tmp_path: Path):
    t = src.load_atomic(_write_atomic(tmp_path, "x", ATOMIC_INTER), "x")
    assert _records(t.items) == [[242, "242", "", ""], [302, "302", "", ""]] and t.users.empty


@pytest.mark.parametrize(
    ("inter", "message"),
    [
        ("user_id:token\trating:float\n1\t3\n", r"x.inter:1: missing column\(s\) \['item_id'\]"),
        (ATOMIC_INTER + "196\t242\t3\tlater\n", r"x.inter:4: column 'timestamp' has invalid value 'later'"),
        (ATOMIC_INTER + "196\t242\t\t881250949\n", r"x.inter:4: column 'rating' must be a number >= 0, got ''"),
        (ATOMIC_INTER + "\t242\t3\t881250949\n", r"x.inter:4: column 'user_id' is empty"),
        (ATOMIC_INTER + "196\t999\t3\t881250949\n", r"x.inter:4: unknown item_id '999', not in the item"),
    ],
)
def test_atomic_errors(tmp_path: Path, inter: str, message: str):
    _write_atomic(tmp_path, "x", inter, ATOMIC_ITEM)
    with pytest.raises(ValueError, match=message):
        src.load_atomic(tmp_path, "x")


def test_atomic_missing_inter_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"x.inter: missing"):
        src.load_atomic(tmp_path, "x")


# ----------------------------------------------------------------------------------------------- generic tables
def test_load_table_iso_dates_string_ids_and_glob(tmp_path: Path):
    _write(
        tmp_path / "log" / "part-0.csv",
        "uid,iid,stars,ts\nA1B2C3,B0X,4,2015-03-01\nZZ9,B0Y,2,2015-03-01T12:00:00+02:00\n",
    )
    _write(tmp_path / "log" / "part-1.csv", "uid,iid,stars,ts\nA1B2C3,B0Y,5,1970-01-02\n")
    t = src.load_table(tmp_path / "log" / "part-*.csv", {"user": "uid", "item": "iid", "rating": "stars", "time": "ts"})
    _canonical_dtypes(t)
    assert _records(t.interactions) == [[1, 1, 4.0, 1425168000], [2, 2, 2.0, 1425204000], [1, 2, 5.0, 86400]]
    assert _records(t.items) == [[1, "B0X", "", "", "B0X"], [2, "B0Y", "", "", "B0Y"]]
    assert _records(t.users) == [[1, 0, "", "", "A1B2C3"], [2, 0, "", "", "ZZ9"]]


def test_load_table_implicit_parquet_with_item_and_user_tables(tmp_path: Path):
    pd.DataFrame({"u": ["x", "y", "x"], "i": [10, 20, 20]}).to_parquet(tmp_path / "inter.parquet")
    _write(
        tmp_path / "items.tsv",
        "id\tname\tcats\tyr\n20\tHeat\tAction|Crime\t1995\n10\tFargo\tCrime\t1996\n30\tOld\t\t\n",
    )
    pd.DataFrame({"user": ["y", "x"], "years": [30, 41]}).to_parquet(tmp_path / "users.parquet")
    t = src.load_table(
        tmp_path / "inter.parquet",
        {"user": "u", "item": "i"},
        item_path=tmp_path / "items.tsv",
        item_columns={"item": "id", "title": "name", "genres": "cats", "year": "yr"},
        user_path=tmp_path / "users.parquet",
        user_columns={"user": "user", "age": "years"},
    )
    _canonical_dtypes(t)
    assert _records(t.interactions) == [[1, 10, 1.0, 0], [2, 20, 1.0, 1], [1, 20, 1.0, 2]]
    assert _records(t.items) == [
        [20, "Heat", "1995", "Action|Crime"],
        [10, "Fargo", "1996", "Crime"],
        [30, "Old", "", ""],
    ]
    assert "raw_id" not in t.items  # integer ids stay as they are
    assert _records(t.users) == [[2, 30, "", "", "y"], [1, 41, "", "", "x"]]


def test_load_table_parquet_datetimes_and_list_genres(tmp_path: Path):
    times = pd.to_datetime(["2015-03-01", "2015-03-02"])
    pd.DataFrame({"u": [1, 1], "i": [1, 2], "t": times}).to_parquet(tmp_path / "r.parquet")
    pd.DataFrame({"id": [1, 2], "g": [["A", "B"], []], "y": [1995.0, None]}).to_parquet(tmp_path / "i.parquet")
    columns = {"item": "id", "genres": "g", "year": "y"}
    t = src.load_table(tmp_path / "r.parquet", {"user": "u", "item": "i", "time": "t"}, tmp_path / "i.parquet", columns)
    assert t.interactions["timestamp"].tolist() == [1425168000, 1425254400]
    assert _records(t.items) == [[1, "1", "1995", "A|B"], [2, "2", "", ""]]


def test_load_table_leading_zero_ids_are_factorized(tmp_path: Path):
    _write(tmp_path / "r.csv", "u,i\n1,007\n1,7\n")
    t = src.load_table(tmp_path / "r.csv", {"user": "u", "item": "i"})
    assert t.items["raw_id"].tolist() == ["007", "7"] and t.interactions["item_id"].tolist() == [1, 2]
    assert t.users.empty


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("u,i,ts\n1,2,2015-03-01\n1,3,yesterday\n", {"time": "ts"}, r"r.csv:3: column 'ts' has invalid value 'yes"),
        ("u,i,stars\n1,2,4\n1,3,-2\n", {"rating": "stars"}, r"r.csv:3: column 'stars' must be a number >= 0, got '-2'"),
        ("u,i\n1,2\n1,\n", {}, r"r.csv:3: column 'i' is empty"),
        ("u,i\n1,2\n", {"rating": "stars"}, r"r.csv:1: missing column\(s\) \['stars'\]"),
        ("u,i\n1,2\n", {"item": None}, r"the column mapping needs 'item'"),
    ],
)
def test_load_table_errors(tmp_path: Path, text: str, columns: dict, message: str):
    _write(tmp_path / "r.csv", text)
    with pytest.raises(ValueError, match=message):
        src.load_table(tmp_path / "r.csv", {"user": "u", "item": "i", **columns})


def test_load_table_rejects_unknown_formats_and_empty_globs(tmp_path: Path):
    _write(tmp_path / "r.json", "{}")
    with pytest.raises(ValueError, match=r"r.json: unsupported table format"):
        src.load_table(tmp_path / "r.json", {"user": "u", "item": "i"})
    with pytest.raises(FileNotFoundError, match=r"no file matches"):
        src.load_table(tmp_path / "none-*.csv", {"user": "u", "item": "i"})


# ----------------------------------------------------------------------------------------------- fetch
def _zip_of(root: Path, name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}/", "")
        for p in sorted(root.iterdir()):
            zf.write(p, f"{name}/{p.name}")
    return buf.getvalue()


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def _stub_download(monkeypatch, archive: bytes) -> list[str]:
    calls: list[str] = []

    def fake_download(url: str, dest: Path, timeout: float = 30.0) -> None:
        calls.append(url)
        dest.write_bytes(archive)

    monkeypatch.setattr(ml, "download_url", fake_download)
    return calls


def test_fetch_grouplens_verifies_md5_extracts_and_reuses_the_cache(tmp_path: Path, monkeypatch, ml1m_dir: Path):
    archive = _zip_of(ml1m_dir, "ml-1m")
    calls = _stub_download(monkeypatch, archive)
    url = grouplens.GROUPLENS["ml-1m"][0]
    monkeypatch.setitem(grouplens.GROUPLENS, "ml-1m", (url, hashlib.md5(archive).hexdigest()))
    cache = tmp_path / "cache"
    root = src.fetch_grouplens("ml-1m", cache)
    assert root == cache / "ml-1m" and calls == ["https://files.grouplens.org/datasets/movielens/ml-1m.zip"]
    assert (root / "SOURCE").read_text().strip() == "grouplens"
    assert (root / "movies.dat").read_bytes() == (ml1m_dir / "movies.dat").read_bytes()
    assert len(grouplens.LOADERS["ml-1m"](root).interactions) == 4
    assert src.fetch_grouplens("ml-1m", cache) == root and len(calls) == 1  # second use: no network
    assert _leftovers(cache) == ["ml-1m"]


def test_fetch_grouplens_md5_mismatch_leaves_only_the_lock(tmp_path: Path, monkeypatch, ml1m_dir: Path):
    _stub_download(monkeypatch, _zip_of(ml1m_dir, "ml-1m"))
    cache = tmp_path / "cache"
    published = grouplens.GROUPLENS["ml-1m"][1]
    assert published == "c4d9eecfca2ab87c1945afe126590906"
    with pytest.raises(ml.ChecksumError, match=rf"ml-1m\.zip: md5 [0-9a-f]{{32}} != published {published}"):
        src.fetch_grouplens("ml-1m", cache)
    assert _leftovers(cache) == [] and [p.name for p in cache.iterdir()] == [".ml-1m.lock"]


def test_fetch_grouplens_without_md5_logs_the_sha256(tmp_path: Path, monkeypatch, mlcsv_dir: Path, caplog):
    archive = _zip_of(mlcsv_dir, "ml-latest-small")
    _stub_download(monkeypatch, archive)
    with caplog.at_level(logging.WARNING, logger=grouplens.__name__):
        root = src.fetch_grouplens("ml-latest-small", tmp_path)
    assert hashlib.sha256(archive).hexdigest() in caplog.text
    assert len(grouplens.LOADERS["ml-latest-small"](root).items) == 6


def test_fetch_grouplens_refuses_unsafe_zip_members_and_unknown_names(tmp_path: Path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-latest-small/../../evil.txt", "x")
    _stub_download(monkeypatch, buf.getvalue())
    with pytest.raises(ValueError, match="unsafe member path"):
        src.fetch_grouplens("ml-latest-small", tmp_path / "cache")
    assert _leftovers(tmp_path / "cache") == [] and not (tmp_path / "evil.txt").exists()
    with pytest.raises(ValueError, match=r"unknown GroupLens dataset 'ml-5m'"):
        src.fetch_grouplens("ml-5m", tmp_path / "cache")


def test_registry_and_urls():
    assert set(grouplens.LOADERS) == set(grouplens.GROUPLENS) == {"ml-1m", "ml-20m", "ml-25m", "ml-latest-small"}
    for name, (url, _) in grouplens.GROUPLENS.items():
        assert url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
    assert grouplens.LOADERS["ml-25m"] is src.load_ml_csv


# ------------------------------------------------------------------------------- through the DataModule
def test_datamodule_selects_the_dataset_and_renders_anonymous_users(ml1m_dir: Path, mlcsv_dir: Path, tmp_path: Path):
    from m6rec.data import BehaviourLogDataModule

    ml1m = BehaviourLogDataModule(data_dir=str(tmp_path), dataset="ml-1m", root=str(ml1m_dir), max_length=256)
    ml1m.setup()
    assert ml1m.stats["interactions"] == len(src.load_ml1m(ml1m_dir).interactions) > 0
    texts = {ml1m.tokenizer.decode(ids).split(" rated ")[0] for d in ml1m.datasets.values() for ids in d.input_ids}
    assert texts == {"A under 18-year-old female K-12 student", "A 56+-year-old male self-employed"}  # like ML-100K
    latest = BehaviourLogDataModule(
        data_dir=str(tmp_path), dataset="ml-latest-small", root=str(mlcsv_dir), max_length=256
    )
    latest.setup()
    texts = [latest.tokenizer.decode(ids) for d in latest.datasets.values() for ids in d.input_ids]
    assert texts and all(t.startswith("A user rated ") and " Will they enjoy " in t for t in texts)
    with pytest.raises(ValueError, match=r"data.dataset: unknown dataset 'ml-10m'"):
        BehaviourLogDataModule(data_dir=str(tmp_path), dataset="ml-10m").setup()


# ------------------------------------------------------------------------------- data=atomic / data=table configs
def _instantiate(overrides: list[str], tmp_path: Path):
    from hydra.utils import instantiate

    from tests.helpers import compose_config

    return instantiate(compose_config([*overrides, f"paths.data_dir={tmp_path}"], tmp_path).data)


def test_atomic_config_reads_a_recbole_folder(tmp_path: Path):
    from tests.fixtures import make_log, write_recbole

    root = write_recbole(tmp_path / "rb", make_log())
    dm = _instantiate(["data=atomic", f"data.root={root}"], tmp_path)
    dm.setup()
    assert dm.stats["interactions"] == 320 and dm.stats["users"] == 16
    texts = [dm.tokenizer.decode(ids) for d in dm.datasets.values() for ids in d.input_ids]
    assert any(t.startswith("A 25-year-old female writer rated ") for t in texts)  # user 2 of make_log
    assert any(t.endswith(" Will he enjoy Heat (1995), Action, Crime, Thriller?") for t in texts)
    (root / "other.inter").write_text(ATOMIC_INTER)
    with pytest.raises(ValueError, match=r"data.source.name: .* holds 2 .inter files \['ml-100k', 'other'\]"):
        _instantiate(["data=atomic", f"data.root={root}"], tmp_path).setup()
    with pytest.raises(ValueError, match=r"^data.root: required for data.dataset=atomic: a folder of RecBole"):
        _instantiate(["data=atomic"], tmp_path).setup()


def test_table_config_maps_columns_and_templates_name_extra_columns(mlcsv_dir: Path, tmp_path: Path):
    _write(mlcsv_dir / "users.tsv", "uid\tjob\n1\tbaker\n2\tpilot\n")
    dm = _instantiate(
        [
            "data=table",
            f"data.root={mlcsv_dir}",
            "data.max_length=256",
            "data.source.users=users.tsv",
            "data.source.user_columns={user:uid,job:job}",
            "data.templates.user='A {job}'",
            "+data.source.item_columns.tagline=title",
            "data.templates.candidate='jinja:{{ tagline | upper }}'",
        ],
        tmp_path,
    )
    dm.setup()
    texts = [dm.tokenizer.decode(ids) for d in dm.datasets.values() for ids in d.input_ids]
    assert len(texts) == 4 and all(t.startswith(("A baker rated ", "A pilot rated ")) for t in texts)
    assert any(t.endswith(" Will they enjoy AMERICAN PRESIDENT, THE (1995)?") for t in texts)
    with pytest.raises(ValueError, match=r"data.templates.candidate: unknown field\(s\) \['brand'\]; the item table"):
        _instantiate(["data=table", f"data.root={mlcsv_dir}", "data.templates.candidate='{brand}'"], tmp_path).setup()
    with pytest.raises(ValueError, match=r"^data.source.colums: not an option of data.dataset=table; options: "):
        _instantiate(["data=table", f"data.root={mlcsv_dir}", "+data.source.colums={}"], tmp_path).setup()


# ------------------------------------------------------------------------------- the sample cache
def test_sample_cache_is_read_back_without_rendering(ml100k_dir: Path, tmp_path: Path, monkeypatch):
    from m6rec.data import BehaviourLogDataModule
    from m6rec.data.text import sample_prompts

    first = BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir))
    first.setup()
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == ["", ".lock"]  # one entry, no temp dirs

    def refuse(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(sample_prompts, "encode_batch", refuse)
    monkeypatch.setattr(BehaviourLogDataModule, "samples", refuse)
    second = BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), batch_size=7)  # same samples
    second.setup()
    assert second.stats == first.stats and second.stats["interactions"] == 320
    for name, a in first.datasets.items():
        b = second.datasets[name]
        assert len(a) == len(b) > 0 and all(np.array_equal(x, y) for x, y in zip(a.input_ids, b.input_ids, strict=True))
        for column in ("labels", "user_ids", "item_ids", "ratings"):
            np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
    with pytest.raises(AssertionError, match="rendered again"):  # another sample setting: another cache entry
        BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), history_len=3).setup()


def test_cache_key_holds_the_tokenizer_identity(tmp_path: Path):
    from m6rec.data.datamodules.sample_cache import cache_dir
    from m6rec.data.text.tokenizer import train_bpe_tokenizer

    texts = [f"Movie {i} ({i % 5 + 1}/5) rated by a user" for i in range(300)]
    small, large = (train_bpe_tokenizer(texts, size, tmp_path / "tok") for size in (270, 300))
    again = train_bpe_tokenizer(texts, 270, tmp_path / "tok")  # the same tokenizer, loaded from its cache
    assert cache_dir(tmp_path, "f" * 16, small) == cache_dir(tmp_path, "f" * 16, again)
    assert cache_dir(tmp_path, "f" * 16, small) != cache_dir(tmp_path, "f" * 16, large)
    assert cache_dir(tmp_path, "f" * 16, small) != cache_dir(tmp_path, "e" * 16, small)


def test_failed_build_leaves_no_cache_and_waiters_read_the_winner(ml100k_dir: Path, tmp_path: Path, monkeypatch):
    import threading

    from filelock import FileLock

    from m6rec.data import BehaviourLogDataModule
    from m6rec.data.datamodules.sample_cache import load_or_build, write_samples
    from m6rec.data.text import sample_prompts

    def crash(*args, **kwargs):
        raise RuntimeError("tokenizing crashed")

    with monkeypatch.context() as patch:
        patch.setattr(sample_prompts, "encode_batch", crash)
        with pytest.raises(RuntimeError, match="tokenizing crashed"):
            BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir)).setup()
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]  # nothing half-written

    path, result = tmp_path / "cache" / "entry", {}
    with FileLock(str(path) + ".lock"):  # another job is building: the waiter must not build too
        waiter = threading.Thread(target=lambda: result.update(out=load_or_build(path, crash)))
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()
        write_samples(
            path,
            {"input_ids": [np.array([1, 2], np.int32), np.array([3], np.int32)], "label": np.ones(2)},
            {"stats": {"n": 2}},
        )
    waiter.join(timeout=10)
    columns, meta, hit = result["out"]
    assert hit and meta["stats"] == {"n": 2} and [x.tolist() for x in columns["input_ids"]] == [[1, 2], [3]]


# ------------------------------------------------------------------------------- length bucketing
def _padding(batches: list[np.ndarray], lengths: np.ndarray) -> int:
    return int(sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches))


def test_length_grouped_batches_pad_less_and_cover_each_sample_once():
    from torch.utils.data import DataLoader

    from m6rec.data.datamodules.bucketing import LengthGroupedSampler

    lengths = np.random.default_rng(0).integers(5, 200, 1003)
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=3, bucket_batches=10)
    batches = sampler.batches()
    assert sorted(np.concatenate(batches).tolist()) == list(range(1003)) and len(sampler) == 1003
    assert [len(b) for b in batches] == [16] * 62 + [11]  # the one short batch comes last
    shuffled = np.random.default_rng(3).permutation(1003)
    random_batches = [shuffled[k : k + 16] for k in range(0, 1003, 16)]
    assert _padding(batches, lengths) * 5 < _padding(random_batches, lengths)
    loader = DataLoader(np.arange(1003), batch_size=16, sampler=sampler)
    assert [b.tolist() for b in loader] == [b.tolist() for b in batches]  # the DataLoader cuts exactly these
    sampler.set_epoch(1)
    assert [b.tolist() for b in sampler.batches()] != [b.tolist() for b in batches]
    assert sorted(np.concatenate(sampler.batches()).tolist()) == list(range(1003))


@pytest.mark.parametrize(("n", "repeated"), [(32 * 6, 0), (32 * 5 + 7, 0), (32 * 4 + 7, 32)])
def test_length_grouped_ranks_take_disjoint_batches(n: int, repeated: int):
    from m6rec.data.datamodules.bucketing import LengthGroupedSampler

    lengths = np.random.default_rng(1).integers(1, 50, n)
    ranks = [LengthGroupedSampler(lengths, 32, num_replicas=3, rank=r, seed=5).batches() for r in range(3)]
    assert len({len(r) for r in ranks}) == 1  # the same number of steps on every rank
    seen = np.concatenate([np.concatenate(r) for r in ranks])
    assert set(seen.tolist()) == set(range(n)) and len(seen) == n + repeated  # uneven: ranks short of a batch repeat
    assert all(len(b) == 32 for r in ranks for b in r[:-1])


def test_datamodule_length_bucketing_shrinks_padding(ml100k_dir: Path, tmp_path: Path):
    from m6rec.data import BehaviourLogDataModule
    from m6rec.data.datamodules.bucketing import LengthGroupedSampler

    pads = {}
    for bucketing in (False, True):
        dm = BehaviourLogDataModule(
            data_dir=str(tmp_path), root=str(ml100k_dir), batch_size=16, max_length=128, length_bucketing=bucketing
        )
        dm.setup()
        loader = dm.train_dataloader()
        assert isinstance(loader.sampler, LengthGroupedSampler) == bucketing
        batches = list(loader)
        assert sum(len(b["labels"]) for b in batches) == len(dm.datasets["train"]) == 256
        pads[bucketing] = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    assert pads[True] * 3 < pads[False]
