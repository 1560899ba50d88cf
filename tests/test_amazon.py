"""Amazon Reviews 2018 / 2023 (m6rec.data.sources.amazon): streamed parsing of files in the exact real formats
(gzipped JSON lines), metadata only for reviewed items, and the DataModule / config wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from m6rec.data.sources import amazon
from tests.fixtures import amazon_lines, make_log, write_amazon, write_lines
from tests.helpers import compose_config

REVIEWS_2018 = [  # three reviews, two reviewers, two items (the real 2018 fields)
    '{"overall": 5.0, "verified": true, "reviewTime": "09 1, 2016", "reviewerID": "A3CIUOJXQ5VDQ2", "asin": '
    '"B0000530HU", "style": {"Size:": " 7.0 oz"}, "reviewerName": "Shelly F", "reviewText": "As advertised.\\nGood", '
    '"summary": "Five Stars", "unixReviewTime": 1472688000}',
    '{"overall": 2.0, "verified": false, "reviewTime": "11 14, 2013", "reviewerID": "A2H85LXJJDDC6O", "asin": '
    '"B0000530HU", "reviewerName": "Lee", "reviewText": "Meh", "summary": "Two", "unixReviewTime": 1384387200}',
    '{"overall": 4.0, "verified": true, "reviewTime": "01 2, 2017", "reviewerID": "A3CIUOJXQ5VDQ2", "asin": '
    '"6546546450", "reviewerName": "Shelly F", "summary": "Fine", "unixReviewTime": 1483315200}',
]
META_2018 = [
    '{"category": ["All Beauty", "Skin Care", "Face"], "tech1": "", "description": ["Loud and", "clear."], "fit": '
    '"", "title": "Loud N Clear Amplifier", "also_buy": ["B0000530HU"], "brand": "idea village", "feature": [], '
    '"rank": [], "also_view": [], "main_cat": "All Beauty", "similar_item": "", "date": "", "price": "", "asin": '
    '"6546546450", "imageURL": [], "imageURLHighRes": []}',
    '{"category": [], "description": [], "title": "Never reviewed", "brand": "", "main_cat": "Tools", "asin": "X1"}',
    '{"category": [], "description": "Cool mint.", "title": "Ice Blue Shave Gel", "brand": "Gillette", "main_cat": '
    '"All Beauty", "asin": "B0000530HU"}',
    '{"category": [], "title": "A duplicate line of the same item: the first wins", "asin": "B0000530HU"}',
]
REVIEWS_2023 = [
    '{"rating": 5.0, "title": "Such a lovely scent", "text": "This spray is really nice.", "images": [], "asin": '
    '"B00YQ6X8EO", "parent_asin": "B00YQ6X8EO", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": '
    '1588687728923, "helpful_vote": 0, "verified_purchase": true}',
    '{"rating": 3.0, "title": "OK", "text": "Fine.", "images": [], "asin": "B081TJ8YS3", "parent_asin": "B00YQ6X8EO", '
    '"user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588615855070, "helpful_vote": 1, '
    '"verified_purchase": true}',
]
META_2023 = [
    '{"main_category": "All Beauty", "title": "Howard LC0008 Leather Conditioner", "average_rating": 4.8, '
    '"rating_number": 10, "features": [], "description": [], "price": null, "images": [], "videos": [], "store": '
    '"Howard Products", "categories": [], "details": {"UPC": "617390882781"}, "parent_asin": "B01CUPMQZE", '
    '"bought_together": null}',
    '{"main_category": "All Beauty", "title": "Lavender Spray", "average_rating": 4.1, "rating_number": 3, "features":'
    ' [], "description": ["Calming.", "8 oz."], "price": 9.5, "images": [], "videos": [], "store": "Mist", '
    '"categories": ["Beauty", "Fragrance"], "details": {}, "parent_asin": "B00YQ6X8EO", "bought_together": null}',
]


def _records(df: pd.DataFrame) -> list[list]:
    return df.astype(object).values.tolist()


def test_2018_gzipped_json_lines_parse_to_exact_tables(tmp_path: Path):
    write_lines(tmp_path / "All_Beauty.json.gz", REVIEWS_2018)
    write_lines(tmp_path / "meta_All_Beauty.json.gz", META_2018)
    t = amazon.load_amazon(tmp_path, "2018", "All_Beauty")
    assert _records(t.interactions) == [
        [1, 1, 5.0, 1472688000, "As advertised. Good", "Five Stars"],
        [2, 1, 2.0, 1384387200, "Meh", "Two"],
        [1, 2, 4.0, 1483315200, "", "Fine"],  # no reviewText
    ]
    assert t.interactions.dtypes.astype(str).tolist()[:4] == ["int64", "int64", "float32", "int64"]
    assert _records(t.items) == [
        [1, "Ice Blue Shave Gel", "", "All Beauty", "All Beauty", "Cool mint.", "Gillette", "B0000530HU"],
        [
            2,
            "Loud N Clear Amplifier",
            "",
            "All Beauty|Skin Care|Face",
            "Face",
            "Loud and clear.",
            "idea village",
            "6546546450",
        ],
    ]
    assert _records(t.users) == [[1, 0, "", "", "A3CIUOJXQ5VDQ2"], [2, 0, "", "", "A2H85LXJJDDC6O"]]


def test_2023_jsonl_milliseconds_parent_asin_and_main_category(tmp_path: Path):
    write_lines(tmp_path / "All_Beauty.jsonl", REVIEWS_2023)  # uncompressed .jsonl works too
    write_lines(tmp_path / "meta_All_Beauty.jsonl.gz", META_2023)
    t = amazon.load_amazon(tmp_path, 2023, "All_Beauty", keep_text=False)
    assert _records(t.interactions) == [[1, 1, 5.0, 1588687728], [1, 1, 3.0, 1588615855]]  # two variants, one parent
    assert _records(t.items) == [
        [1, "Lavender Spray", "", "Beauty|Fragrance", "Fragrance", "Calming. 8 oz.", "Mist", "B00YQ6X8EO"]
    ]
    assert t.users["raw_id"].tolist() == ["AGKHLEW2SOWHNMFQIJGBECAF7INQ"]


def test_metadata_is_parsed_only_for_reviewed_items(tmp_path: Path):
    """A broken metadata line of an item nobody reviewed is skipped unread; an item without metadata keeps its id."""
    write_lines(tmp_path / "Toys_5.json", REVIEWS_2018)  # 2018's 5-core name reads meta_Toys
    write_lines(tmp_path / "meta_Toys.json", ['{"asin": "NEVER", "title": "broken', META_2018[0]])
    t = amazon.load_amazon(tmp_path, "2018", "Toys_5")
    assert t.items["title"].tolist() == ["B0000530HU", "Loud N Clear Amplifier"]
    (tmp_path / "meta_Toys.json").unlink()
    assert amazon.load_amazon(tmp_path, "2018", "Toys_5").items["title"].tolist() == ["B0000530HU", "6546546450"]


def test_reviews_are_streamed_never_loaded_whole(tmp_path: Path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("json.load reads a whole file")

    monkeypatch.setattr(json, "load", refuse)
    write_amazon(tmp_path, "2023", make_log())
    t = amazon.load_amazon(tmp_path, "2023", "All_Beauty")
    assert len(t.interactions) == 16 * 20 and len(t.items) == 30


@pytest.mark.parametrize("version", ["2018", "2023"])
def test_fixture_log_round_trips(tmp_path: Path, version: str):
    log = make_log()
    write_amazon(tmp_path, version, log)
    t = amazon.load_amazon(tmp_path, version, "All_Beauty")
    raw_items = t.items.set_index("item_id")["raw_id"]
    got = sorted(
        zip(
            t.users.set_index("user_id")["raw_id"][t.interactions["user_id"]],
            raw_items[t.interactions["item_id"]],
            t.interactions["rating"],
            t.interactions["timestamp"],
            strict=True,
        )
    )
    assert got == sorted((f"A{u:013d}X", f"B{i:09d}", float(r), t) for u, i, r, t in log["ratings"])
    assert t.items.set_index("raw_id").loc["B000000002", ["title", "category"]].tolist() == ["Heat", "Thriller"]


def test_missing_files_and_bad_options_are_one_line_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"no Books.jsonl\(.gz\) .*https://nijianmo.github.io/amazon/"):
        amazon.load_amazon(tmp_path, "2018", "Books")
    with pytest.raises(ValueError, match=r"data.source.version: .* one of \['2018', '2023'\], got '2014'"):
        amazon.load_amazon(tmp_path, "2014", "Books")


# ------------------------------------------------------------------------------- configs and the DataModule
@pytest.mark.parametrize(("choice", "url"), [("amazon2018", amazon.URLS["2018"]), ("amazon2023", amazon.URLS["2023"])])
def test_config_without_root_says_where_to_download(tmp_path: Path, choice: str, url: str):
    from hydra.utils import instantiate

    cfg = compose_config([f"data={choice}", f"paths.data_dir={tmp_path}"], tmp_path)
    with pytest.raises(ValueError, match=rf"^data.root: required for Amazon Reviews .* from {url} into a folder"):
        instantiate(cfg.data).prepare_data()


def test_datamodule_renders_anonymous_reviewers_and_title_category(tmp_path: Path):
    from hydra.utils import instantiate

    root = write_amazon(tmp_path / "amazon", "2018", make_log())
    cfg = compose_config(
        ["data=amazon2018", f"data.root={root}", f"paths.data_dir={tmp_path}", "data.k_core=0"], tmp_path
    )
    dm = instantiate(cfg.data)
    dm.setup()
    assert dm.stats["interactions"] == 320 and dm.stats["users"] == 16
    texts = [dm.tokenizer.decode(ids) for d in dm.datasets.values() for ids in d.input_ids]
    assert all(t.startswith("A user rated ") for t in texts)
    assert any(t.endswith(" Will they enjoy Heat, Thriller?") for t in texts)
    assert amazon_lines("2018", make_log())[0][0].startswith('{"overall": ')
