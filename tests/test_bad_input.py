"""Bad input anywhere in the data layer is one ValueError line naming the file and line (and column or key), or the
config key; a failed preparation leaves nothing in any cache. One test per kind of damage."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from m6rec.data import BehaviourLogDataModule
from m6rec.data import sources as src
from m6rec.data.sources import amazon as amz
from tests.fixtures import amazon_lines, make_log, write_lines

RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n"
MOVIES = "movieId,title,genres\n1,Toy Story (1995),Animation\n3,Heat (1995),Action|Crime\n"


def _ml_csv(root: Path, ratings: str = RATINGS, movies: str = MOVIES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_bytes(ratings.encode("utf-8") if isinstance(ratings, str) else ratings)
    (root / "movies.csv").write_bytes(movies.encode("utf-8") if isinstance(movies, str) else movies)
    return root


def _one_line_error(call, *message: str) -> str:
    """Run `call`, expect a one-line ValueError containing every fragment of `message`."""
    with pytest.raises(ValueError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and all(part in text for part in message), text
    return text


def _amazon(root: Path, reviews: list[str], meta: list[str] | None = None) -> Path:
    write_lines(root / "Toys.jsonl.gz", reviews)
    write_lines(root / "meta_Toys.jsonl.gz", meta if meta is not None else amazon_lines("2023", make_log(2, 3, 2))[1])
    return root


REVIEWS = amazon_lines("2023", make_log(2, 3, 2))[0]  # four real-format 2023 review lines


# ------------------------------------------------------------------------------- malformed rows
def test_csv_row_with_an_unterminated_quote(tmp_path: Path):
    root = _ml_csv(tmp_path, RATINGS + '2,"3,1.0,964983815\n2,1,2.0,964983816\n')
    _one_line_error(lambda: src.load_ml_csv(root), "ratings.csv:5:", "unterminated quote")


def test_json_line_that_is_not_json(tmp_path: Path):
    root = _amazon(tmp_path, [*REVIEWS[:2], '{"rating": 5.0, "user_id": "A1", ', *REVIEWS[2:]])
    _one_line_error(lambda: amz.load_amazon(root, "2023", "Toys"), "Toys.jsonl.gz:3:", "not valid JSON at column 34")


def test_truncated_gzip(tmp_path: Path):
    root = _amazon(tmp_path, REVIEWS * 50)
    data = (root / "Toys.jsonl.gz").read_bytes()
    (root / "Toys.jsonl.gz").write_bytes(data[: len(data) // 2])
    _one_line_error(lambda: amz.load_amazon(root, "2023", "Toys"), "Toys.jsonl.gz:", "corrupt or truncated gzip")


# ------------------------------------------------------------------------------- wrong column counts
def test_csv_row_with_too_many_columns(tmp_path: Path):
    root = _ml_csv(tmp_path, RATINGS + "2,3,1.0,964983815,extra\n")
    _one_line_error(lambda: src.load_ml_csv(root), "ratings.csv:5:", "expected 4 fields, saw 5")


def test_dat_row_with_too_few_fields(tmp_path: Path):
    root = tmp_path / "ml-1m"
    root.mkdir()
    (root / "ratings.dat").write_text("1::1::5::978300760\n1::3::978302109\n")
    (root / "movies.dat").write_text("1::Toy Story (1995)::Animation\n3::Heat (1995)::Action\n")
    (root / "users.dat").write_text("1::F::1::10::48067\n")
    _one_line_error(lambda: src.load_ml1m(root), "ratings.dat:2:", "expected 4 '::'-separated fields, saw 3")


def test_atomic_row_with_too_many_columns(tmp_path: Path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\n1\t2\n1\t3\t9\n")
    _one_line_error(lambda: src.load_atomic(tmp_path, "x"), "x.inter:3:", "expected 2 fields, saw 3")


# ------------------------------------------------------------------------------- non-UTF-8 bytes
def test_csv_with_latin1_bytes(tmp_path: Path):
    root = _ml_csv(tmp_path, movies=MOVIES.encode() + "4,Café (1994),Comedy\n".encode("latin-1"))
    offset = len(MOVIES.encode()) + len("4,Caf")
    _one_line_error(lambda: src.load_ml_csv(root), "movies.csv:", f"not valid UTF-8 at byte {offset} (line 4)")


def test_json_line_with_latin1_bytes(tmp_path: Path):
    bad = REVIEWS[1].replace("Review of", "Revi\xe9w of").encode("latin-1").decode("latin-1")
    (tmp_path / "Toys.jsonl").write_bytes(b"".join(line.encode("latin-1") + b"\n" for line in [REVIEWS[0], bad]))
    column = bad.index("\xe9") + 1
    _one_line_error(
        lambda: amz.load_amazon(tmp_path, "2023", "Toys"), "Toys.jsonl:2:", f"not valid UTF-8 at column {column}"
    )


# ------------------------------------------------------------------------------- missing required columns / keys
def test_csv_without_a_required_column(tmp_path: Path):
    root = _ml_csv(tmp_path, "userId,movieId,timestamp\n1,1,964982703\n")
    _one_line_error(lambda: src.load_ml_csv(root), "ratings.csv:1:", "missing column(s) ['rating']")


def test_table_mapping_names_an_absent_column(tmp_path: Path):
    root = _ml_csv(tmp_path)
    call = lambda: src.load_table_dir(root, "ratings.csv", {"user": "userId", "item": "movieId", "time": "when"})  # noqa: E731
    _one_line_error(call, "ratings.csv:1:", "missing column(s) ['when']")


def test_json_line_without_a_required_key(tmp_path: Path):
    root = _amazon(tmp_path, [*REVIEWS[:3], REVIEWS[3].replace('"rating": ', '"stars": ')])
    _one_line_error(lambda: amz.load_amazon(root, "2023", "Toys"), "Toys.jsonl.gz:4:", "missing key 'rating'")


# ------------------------------------------------------------------------------- nothing left / no rows
def test_k_core_that_removes_everything_names_the_config_key(tmp_path: Path):
    dm = BehaviourLogDataModule(
        data_dir=str(tmp_path), dataset="ml-latest-small", root=str(_ml_csv(tmp_path / "r")), k_core=3
    )
    _one_line_error(dm.setup, "data.k_core: no interactions left after filtering (users >= 3, items >= 3)")
    assert not (tmp_path / "cache").exists() or [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]


def test_header_only_interactions_file(tmp_path: Path):
    root = _ml_csv(tmp_path, "userId,movieId,rating,timestamp\n")
    _one_line_error(lambda: src.load_ml_csv(root), "ratings.csv: no interactions")


def test_empty_review_file(tmp_path: Path):
    (tmp_path / "Toys.jsonl.gz").write_bytes(gzip.compress(b"\n"))
    _one_line_error(lambda: amz.load_amazon(tmp_path, "2023", "Toys"), "Toys.jsonl.gz: no reviews")


# ------------------------------------------------------------------------------- unknown ids
def test_interaction_with_an_item_missing_from_the_item_table(tmp_path: Path):
    root = _ml_csv(tmp_path, RATINGS + "2,7,3.0,964983815\n")
    _one_line_error(lambda: src.load_ml_csv(root), "ratings.csv:5:", "unknown item_id 7, not in the item table (movies")


def test_atomic_interaction_with_an_unknown_string_id(tmp_path: Path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\nu1\tB01\nu2\tB99\n")
    (tmp_path / "x.item").write_text("item_id:token\tmovie_title:token_seq\nB01\tHeat\n")
    _one_line_error(lambda: src.load_atomic(tmp_path, "x"), "x.inter:3:", "unknown item_id 'B99'", "(x.item)")


# ------------------------------------------------------------------------------- NaN / negative ratings
@pytest.mark.parametrize(("value", "shown"), [("NaN", "nan"), ("-1", "-1.0"), ("", "nan")])
def test_csv_rating_nan_or_negative(tmp_path: Path, value: str, shown: str):
    root = _ml_csv(tmp_path, RATINGS + f"2,3,{value},964983815\n")
    _one_line_error(lambda: src.load_ml_csv(root), "ratings.csv:5:", f"'rating' must be a number >= 0, got {shown}")


@pytest.mark.parametrize(("value", "shown"), [("NaN", "nan"), ("-2.0", "-2.0"), ('"5"', "'5'")])
def test_json_rating_nan_negative_or_text(tmp_path: Path, value: str, shown: str):
    line = re.sub(r'^\{"rating": [0-9.]+,', '{"rating": ' + value + ",", REVIEWS[1])
    assert line != REVIEWS[1]
    root = _amazon(tmp_path, [REVIEWS[0], line, *REVIEWS[2:]])
    _one_line_error(
        lambda: amz.load_amazon(root, "2023", "Toys"),
        "Toys.jsonl.gz:2:",
        f"key 'rating' must be a number >= 0, got {shown}",
    )


# ------------------------------------------------------------------------------- config keys and caches
def test_unknown_dataset_and_source_option_name_the_config_key(tmp_path: Path):
    _one_line_error(BehaviourLogDataModule(data_dir=str(tmp_path), dataset="netflix").setup, "data.dataset: unknown")
    dm = BehaviourLogDataModule(
        data_dir=str(tmp_path),
        dataset="ml-latest-small",
        root=str(_ml_csv(tmp_path / "r")),
        source={"category": "Toys"},
    )
    _one_line_error(dm.setup, "data.source.category: not an option of data.dataset=ml-latest-small")


def test_bad_file_leaves_no_cache_behind(tmp_path: Path):
    root = _ml_csv(tmp_path / "r", RATINGS + "2,3,-1,964983815\n")
    dm = BehaviourLogDataModule(data_dir=str(tmp_path / "data"), dataset="ml-latest-small", root=str(root))
    _one_line_error(dm.setup, "ratings.csv:5:")
    assert not (tmp_path / "data" / "cache").exists() and not (tmp_path / "data" / "tokenizers").exists()
