"""Regenerate jobs/sample/catalog.parquet from catalog.csv (run: python make_parquet.py).

The Parquet export uses other column names than the CSV (product_id, name, engine, size,
seed_value, description), a nullable integer seed column and a ready-made prompt column, to
show manifest.param_columns and prompt_column in jobs/catalog-parquet.toml.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Read catalog.csv as text and write catalog.parquet."""
    df = pd.read_csv(HERE / "catalog.csv", dtype=str, keep_default_na=False)
    out = pd.DataFrame(
        {
            "product_id": df["sku"],
            "name": df["title"],
            "category": df["category"],
            "engine": df["model"],
            "size": df["image_size"],
            "seed_value": pd.array([int(s) if s else None for s in df["seed"]], dtype="Int64"),
            "description": "Catalog photo: "
            + df["title"]
            + ", "
            + df["colour"]
            + ", made of "
            + df["material"]
            + ", three-quarter view, white background",
            "photo": df["photo"],
        }
    )
    out.to_parquet(HERE / "catalog.parquet", index=False)


if __name__ == "__main__":
    main()
