"""Write a small MovieLens-100K look-alike in the exact GroupLens (u.*) or RecBole atomic format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from m6rec.data.movielens import GENRES

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
        title, year, genres = TITLES[i] if i < len(TITLES) else (f"Movie {i + 1}", str(1980 + i % 20),
                                                                 [GENRES[1 + i % 18]])  # fmt: skip
        items.append({"item_id": i + 1, "title": title, "year": year, "genres": genres})
    users = [{"user_id": u + 1, "age": int(18 + (u * 7) % 50), "gender": "MF"[u % 2],
              "occupation": OCCUPATIONS[u % len(OCCUPATIONS)], "zip": f"{10000 + u:05d}"}  # fmt: skip
             for u in range(n_users)]
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
