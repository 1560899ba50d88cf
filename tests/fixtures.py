"""Write a small MovieLens-100K look-alike in the exact GroupLens (u.*) or RecBole atomic format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from m6rec.data.sources.movielens import GENRES

OCCUPATIONS = ["technician", "writer", "student", "artist", "engineer"]
TITLES = [
    ("Toy Story", "1995", ["Animation", "Children's", "Comedy"]),
    ("Heat", "1995", ["Action", "Crime", "Thriller"]),
    ("Café au lait", "1994", ["Comedy"]),  # latin-1 in u.item
    ("Fargo", "1996", ["Crime", "Drama", "Thriller"]),
    ("unknown", "", ["unknown"]),  # ML-100K item 267 has no title year or date
]


def make_log(n_users: int = 16, n_items: int = 30, per_user: int = 20, seed: int = 0) -> dict:
    """A reproducible log where users prefer some genres, so a model has something to learn."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_items):
        title, year, genres = (
            TITLES[i] if i < len(TITLES) else (f"Movie {i + 1}", str(1980 + i % 20), [GENRES[1 + i % 18]])
        )
        items.append({"item_id": i + 1, "title": title, "year": year, "genres": genres})
    users = [
        {
            "user_id": u + 1,
            "age": int(18 + (u * 7) % 50),
            "gender": "MF"[u % 2],
            "occupation": OCCUPATIONS[u % len(OCCUPATIONS)],
            "zip": f"{10000 + u:05d}",
        }
        for u in range(n_users)
    ]
    rows = []
    for u in range(n_users):
        for j, i in enumerate(rng.choice(n_items, size=per_user, replace=False)):
            likes = (i + u) % 3 == 0
            rating = int(np.clip(rng.normal(4.5 if likes else 2.5, 0.7), 1, 5).round())
            rows.append((u + 1, int(i) + 1, rating, 880000000 + 1000 * j + int(rng.integers(0, 500))))
    return {"items": items, "users": users, "ratings": rows}


def write_grouplens(root: Path, log: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in log["ratings"]))
    lines = []
    for it in log["items"]:
        title = f"{it['title']} ({it['year']})" if it["year"] else it["title"]
        date = f"01-Jan-{it['year']}" if it["year"] else ""
        flags = "|".join("1" if g in it["genres"] else "0" for g in GENRES)
        lines.append(f"{it['item_id']}|{title}|{date}||http://example.org/{it['item_id']}|{flags}\n")
    (root / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (root / "u.user").write_text(
        "".join(f"{u['user_id']}|{u['age']}|{u['gender']}|{u['occupation']}|{u['zip']}\n" for u in log["users"])
    )
    return root


def write_recbole(root: Path, log: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\n"]
    inter += [f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in log["ratings"]]
    (root / "ml-100k.inter").write_text("".join(inter))
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    item += [f"{it['item_id']}\t{it['title']}\t{it['year']}\t{' '.join(it['genres'])}\n" for it in log["items"]]
    (root / "ml-100k.item").write_text("".join(item))
    user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"]
    user += [f"{u['user_id']}\t{u['age']}\t{u['gender']}\t{u['occupation']}\t{u['zip']}\n" for u in log["users"]]
    (root / "ml-100k.user").write_text("".join(user))
    return root


# --------------------------------------------------------------------------- Amazon Reviews (one JSON object a line)
# One line of each real file, with every field the releases have; {…} are filled per record.
AMAZON_LINES = {
    ("2018", "reviews"): '{{"overall": {rating:.1f}, "verified": true, "reviewTime": "09 1, 2016", "reviewerID": '
    '"{user}", "asin": "{item}", "style": {{"Size:": " 7.0 oz"}}, "reviewerName": "Shelly F", "reviewText": {text}, '
    '"summary": {summary}, "unixReviewTime": {time}}}',
    ("2018", "meta"): '{{"category": {categories}, "tech1": "", "description": {description}, "fit": "", "title": '
    '{title}, "also_buy": ["B000000001"], "tech2": "", "brand": "Acme", "feature": [], "rank": [], "also_view": [], '
    '"main_cat": "All Beauty", "similar_item": "", "date": "", "price": "", "asin": "{item}", "imageURL": [], '
    '"imageURLHighRes": []}}',
    ("2023", "reviews"): '{{"rating": {rating:.1f}, "title": {summary}, "text": {text}, "images": [], "asin": '
    '"{item}V", "parent_asin": "{item}", "user_id": "{user}", "timestamp": {time}123, "helpful_vote": 0, '
    '"verified_purchase": true}}',
    ("2023", "meta"): '{{"main_category": "All Beauty", "title": {title}, "average_rating": 4.5, "rating_number": 10, '
    '"features": [], "description": {description}, "price": null, "images": [], "videos": [], "store": "Acme", '
    '"categories": {categories}, "details": {{"UPC": "617390882781"}}, "parent_asin": "{item}", '
    '"bought_together": null}}',
}


def amazon_lines(version: str, log: dict) -> tuple[list[str], list[str]]:
    """`log` (see make_log) as the review and metadata lines of Amazon Reviews `version` ("2018" | "2023"): ids are
    ASIN-like strings (B000000001, A0000000000001X), 2023 times are milliseconds."""
    import json

    def asin(i: int) -> str:
        return f"B{i:09d}"

    reviews = [
        AMAZON_LINES[version, "reviews"].format(
            rating=r,
            user=f"A{u:013d}X",
            item=asin(i),
            time=t,
            text=json.dumps(f"Review of {i} by {u}."),
            summary=json.dumps(f"{r} stars"),
        )
        for u, i, r, t in log["ratings"]
    ]
    meta = [
        AMAZON_LINES[version, "meta"].format(
            item=asin(it["item_id"]),
            title=json.dumps(it["title"]),
            categories=json.dumps(["Beauty", *it["genres"]]),
            description=json.dumps([f"About {it['title']}."]),
        )
        for it in log["items"]
    ]
    return reviews, meta


def write_lines(path: Path, lines: list[str]) -> Path:
    """One line each, gzipped when the name ends in .gz."""
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_amazon(root: Path, version: str, log: dict, category: str = "All_Beauty") -> Path:
    """`<category>` reviews + `meta_<category>` under the release's names (2018 `.json.gz`, 2023 `.jsonl.gz`)."""
    suffix = ".json.gz" if version == "2018" else ".jsonl.gz"
    reviews, meta = amazon_lines(version, log)
    write_lines(root / f"{category}{suffix}", reviews)
    write_lines(root / f"meta_{category}{suffix}", meta)
    return root
