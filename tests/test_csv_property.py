"""Properties of the CSV reader: what a spreadsheet or script writes is what it reads, and a line
with the wrong number of cells is reported at its line, never read shifted.

Tables are written by hand (not by the ``csv`` module) so that each cell is quoted at random, or
whenever it must be, in every delimiter, encoding, BOM and row-end combination.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.job.catalog import Catalog
from batchgen.job.manifest import Manifest, RawRow
from batchgen.job.settings import resolve_settings

CATALOG = Catalog.default()
DELIMITERS = (",", ";", "\t", "|")
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "cp1252")  # utf-8-sig: UTF-8 written with a BOM
CELL = st.text(
    alphabet=st.one_of(
        st.sampled_from([",", ";", "\t", "|", '"', "\n", "\r", " ", "'", "é", "€", "中", "😀"]),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    ),
    max_size=10,
)
KEY = CELL.filter(lambda text: text.strip() != "")  # a row of blanks is a blank line

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def tables(draw: Any) -> dict[str, Any]:
    """A header of plain names, rows of messy cells (the first never blank), and how to write
    them: delimiter, encoding, row end, and whether each cell is quoted when it need not be."""
    width = draw(st.integers(1, 5))
    names = draw(st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=width,
                          max_size=width, unique=True))  # fmt: skip
    rows = draw(st.lists(st.tuples(KEY, *[CELL] * (width - 1)).map(list), max_size=8))
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding == "cp1252":  # what a Windows export can hold
        rows = [[c.encode("cp1252", "replace").decode("cp1252") for c in r] for r in rows]
    return {
        "names": names,
        "rows": rows,
        "delimiter": draw(st.sampled_from(DELIMITERS)),
        "encoding": encoding,
        "row_end": draw(st.sampled_from(["\r\n", "\n"])),
        "quote_all": draw(st.booleans()),
        "coin": draw(st.randoms(use_true_random=False)),
    }


def quoted(cell: str, delimiter: str, always: bool) -> str:
    if always or any(c in cell for c in (delimiter, '"', "\r", "\n")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def write(path: Path, table: dict[str, Any], lines: list[list[str]]) -> list[int]:
    """Write the header and ``lines``; return the line number each record starts on."""
    delimiter, row_end, coin = table["delimiter"], table["row_end"], table["coin"]
    text, starts = "", []
    for record in [table["names"], *lines]:
        starts.append(len(re.findall(r"\r\n|\r|\n", text)) + 1)
        always = table["quote_all"] or coin.random() < 0.3
        text += delimiter.join(quoted(c, delimiter, always) for c in record) + row_end
    path.write_bytes(text.encode(table["encoding"]))
    return starts[1:]


def read(path: Path, table: dict[str, Any], delimiter: str) -> list[RawRow]:
    encoding = "utf-8" if table["encoding"] == "utf-8-sig" else table["encoding"]
    flags = {
        "manifest": str(path), "model": "qwen-image", "id_column": table["names"][0],
        "prompt_column": table["names"][-1], "encoding": encoding, "delimiter": delimiter,
    }  # fmt: skip
    manifest = Manifest.open(resolve_settings(None, flags, {}, cwd=path.parent), CATALOG)
    assert manifest.columns == table["names"]
    return [row for batch in manifest.iter_raw_batches() for row in batch]


@FAST
@given(table=tables(), sniff=st.booleans())
def test_written_tables_read_back_exactly(
    tmp_path: Path, table: dict[str, Any], sniff: bool
) -> None:
    path = tmp_path / "t.csv"
    write(path, table, table["rows"])
    # auto finds the delimiter from a header of two columns or more
    delimiter = "auto" if sniff and len(table["names"]) > 1 else table["delimiter"]
    rows = read(path, table, delimiter)
    assert [list(r.values) for r in rows] == table["rows"]
    assert [r.key for r in rows] == [cells[0].strip() for cells in table["rows"]]
    assert all(r.problems is None for r in rows)


@FAST
@given(table=tables(), data=st.data())
def test_a_line_with_the_wrong_cell_count_is_reported_never_shifted(
    tmp_path: Path, table: dict[str, Any], data: Any
) -> None:
    width = len(table["names"])
    lines, broken = [], []
    for cells in table["rows"]:
        change = data.draw(st.sampled_from(["keep", "extra", "blank extra", "fewer"]))
        if change == "extra":
            cells = cells + data.draw(st.lists(CELL, min_size=1, max_size=3))
        elif change == "blank extra":  # exports with trailing empty columns
            cells = cells + [""] * data.draw(st.integers(1, 3))
        elif change == "fewer" and width > 1:
            cells = cells[: data.draw(st.integers(1, width - 1))]
        if table["encoding"] == "cp1252":
            cells = [c.encode("cp1252", "replace").decode("cp1252") for c in cells]
        broken.append(len(cells) != width)
        lines.append(cells)
    path = tmp_path / "t.csv"
    starts = write(path, table, lines)
    rows = read(path, table, table["delimiter"])
    assert len(rows) == len(lines)
    for row, cells, bad, line in zip(rows, lines, broken, starts, strict=True):
        if not bad:
            assert list(row.values) == cells and row.problems is None
            continue
        assert row.problems is not None
        (problem,) = row.problems
        assert (problem.field, problem.rule) == ("row", "field_count")
        assert problem.message.startswith(f"line {line} has {len(cells)} cells but the header has")
        assert list(row.values) == [] and row.key == "" and row.reference is None
        spec = row.spec()
        assert (spec.key, spec.model, spec.prompt, spec.params) == ("", None, None, {})
