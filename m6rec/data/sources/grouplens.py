"""The GroupLens MovieLens releases beyond ML-100K: ML-1M (`.dat`), ML-20M / ML-25M / ml-latest (CSV), fetched
from files.grouplens.org (md5-checked) into a cache on first use."""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

import pandas as pd
from filelock import FileLock

from m6rec.data.sources import movielens
from m6rec.data.sources.parse import read_csv, read_dat, require_file, select_columns, to_int, to_rating
from m6rec.data.sources.tables import (
    InteractionTables,
    check_tables,
    empty_users,
    interactions_frame,
    items_frame,
    join_genres,
    users_frame,
)
from m6rec.utils.files import atomic_dir, file_digest

log = logging.getLogger(__name__)

_BASE_URL = "https://files.grouplens.org/datasets/movielens"
GROUPLENS: dict[str, tuple[str, str | None]] = {
    "ml-1m": (f"{_BASE_URL}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "ml-20m": (f"{_BASE_URL}/ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3"),
    "ml-25m": (f"{_BASE_URL}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada"),
    "ml-latest-small": (f"{_BASE_URL}/ml-latest-small.zip", None),  # changes with every refresh: no fixed md5
}
ML1M_OCCUPATIONS = (
    "other or not specified",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
ML1M_AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}


# --------------------------------------------------------------------------- GroupLens ML-1M
def load_ml1m(root: str | Path) -> InteractionTables:
    """Parse GroupLens ML-1M (`ratings.dat`, `movies.dat`, `users.dat`: latin-1, `::`-separated)."""
    root = Path(root)
    path = root / "ratings.dat"
    raw = read_dat(path, ["user_id", "item_id", "rating", "timestamp"], as_text=False)
    ratings = [(path, 1, len(raw))]
    inter = interactions_frame(
        to_int(raw, "user_id", path, 1),
        to_int(raw, "item_id", path, 1),
        to_rating(raw, "rating", path, 1),
        to_int(raw, "timestamp", path, 1),
    )

    path = root / "movies.dat"
    raw = read_dat(path, ["item_id", "title", "genres"])
    movies = [(path, 1, len(raw))]
    items = items_frame(to_int(raw, "item_id", path, 1), raw["title"], None, join_genres(raw["genres"]))

    path = root / "users.dat"
    raw = read_dat(path, ["user_id", "gender", "age", "occupation", "zip"])
    occupation = _decode(raw, "occupation", dict(enumerate(ML1M_OCCUPATIONS)), path)
    age = _decode(raw, "age", ML1M_AGES, path)  # the README's bracket codes → "25-34"
    users = users_frame(to_int(raw, "user_id", path, 1), age, raw["gender"], occupation)
    return check_tables(InteractionTables(inter, items, users), ratings, movies, [(path, 1, len(raw))])


def _decode(raw: pd.DataFrame, col: str, names: Mapping[int, str], path: Path) -> pd.Series:
    """A code column of a `.dat` file as its names (line = row + 1); an unknown code names its line."""
    codes = to_int(raw, col, path, 1)
    known = codes.isin(list(names)).to_numpy()
    if not known.all():
        row = int((~known).argmax())
        raise ValueError(f"{path}:{row + 1}: column '{col}' has unknown code {raw[col].iloc[row]!r}")
    return codes.map(names).astype(str)


# --------------------------------------------------------------------------- GroupLens CSV releases
def load_ml_csv(root: str | Path) -> InteractionTables:
    """Parse ML-20M / ML-25M / ml-latest(-small) (`ratings.csv`, `movies.csv`; UTF-8); there is no user table."""
    root = Path(root)
    path = root / "ratings.csv"
    require_file(path, "a GroupLens ratings.csv")
    raw = select_columns(path, read_csv(path, as_text=False), ["userId", "movieId", "rating", "timestamp"])
    ratings = [(path, 2, len(raw))]
    inter = interactions_frame(
        to_int(raw, "userId", path, 2),
        to_int(raw, "movieId", path, 2),
        to_rating(raw, "rating", path, 2),
        to_int(raw, "timestamp", path, 2),
    )

    path = root / "movies.csv"
    require_file(path, "a GroupLens movies.csv")
    raw = select_columns(path, read_csv(path), ["movieId", "title", "genres"])
    items = items_frame(to_int(raw, "movieId", path, 2), raw["title"], None, join_genres(raw["genres"]))
    return check_tables(InteractionTables(inter, items, empty_users()), ratings, [(path, 2, len(raw))])


# --------------------------------------------------------------------------- fetch
def _extract(archive: Path, name: str, out: Path) -> None:
    """Every file of the zip into `out`, the zip's top `<name>/` folder stripped; nothing may escape `out`."""
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            if member.is_dir():
                continue
            parts = PurePosixPath(member.filename).parts
            parts = parts[1:] if len(parts) > 1 and parts[0] == name else parts
            if not parts or PurePosixPath(member.filename).is_absolute() or ".." in parts:
                raise ValueError(f"{archive.name}: unsafe member path {member.filename!r}")
            dest = out.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def fetch_grouplens(name: str, cache_dir: str | Path) -> Path:
    """Return `<cache_dir>/<name>`, downloading the GroupLens zip on first use and checking its published md5.

    A mismatch raises `movielens.ChecksumError` and leaves nothing but the lock file; a dataset without a known md5
    is accepted and its sha256 logged.
    """
    if name not in GROUPLENS:
        raise ValueError(f"data.name: unknown GroupLens dataset {name!r}; choose from {list(GROUPLENS)}")
    cache_dir = Path(cache_dir)
    target = cache_dir / name
    if (target / "SOURCE").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{name}.lock")):
        if (target / "SOURCE").exists():  # another process fetched it while we waited
            return target
        url, md5 = GROUPLENS[name]
        with atomic_dir(target) as tmp, tempfile.TemporaryDirectory(dir=cache_dir) as download:
            archive = Path(download) / f"{name}.zip"
            log.info("Fetching %s from %s", name, url)
            movielens.download_url(url, archive)
            digest = file_digest(archive, "md5")
            if md5 is None:
                log.warning("%s: no published md5 to check; sha256 %s", url, file_digest(archive))
            elif digest != md5:
                raise movielens.ChecksumError(f"{url}: md5 {digest} != published {md5}; cache left untouched")
            _extract(archive, name, tmp)
            (tmp / "SOURCE").write_text("grouplens\n")
    return target


LOADERS: dict[str, Callable[[str | Path], InteractionTables]] = {
    "ml-1m": load_ml1m,
    "ml-20m": load_ml_csv,
    "ml-25m": load_ml_csv,
    "ml-latest-small": load_ml_csv,
}
