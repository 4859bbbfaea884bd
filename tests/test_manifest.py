"""Manifest readers: messy CSV, Parquet/JSONL equivalence, streaming, templates, params."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.errors import UsageError
from batchgen.job.catalog import Catalog, ReferenceInfo
from batchgen.job.filetypes import sniff_mime
from batchgen.job.manifest import Manifest, RowSpec, cell_text
from batchgen.job.settings import Settings, resolve_settings
from batchgen.job.template import parse_template

REPO = Path(__file__).resolve().parent.parent
CATALOG = Catalog.default()


def make_settings(manifest: Path, **flags: Any) -> Settings:
    flags.setdefault("model", "qwen-image")
    return resolve_settings(None, {"manifest": str(manifest), **flags}, {}, cwd=manifest.parent)


def read_all(settings: Settings) -> list[RowSpec]:
    return [row for batch in Manifest.open(settings, CATALOG).iter_batches() for row in batch]


def as_tuple(row: RowSpec) -> tuple[Any, ...]:
    return (
        row.index, row.row_number, row.key, row.model, row.prompt, row.params, row.reference,
        row.passthrough, row.problems,
    )  # fmt: skip


# --------------------------------------------------------------------------- messy CSV


def test_messy_csv(tmp_path: Path) -> None:
    data = (
        "\ufeffsku,title,colour,model,image_size,seed,note\r\n"
        '00123,"Mug, large",blue,,,,"line one\r\nline two"\r\n'
        '0042,"Say ""hi"" cup",,qwen2-image,16:9,7,\r\n'
        "\r\n"
        ",Lamp,red,qwen2-image,,,x\r\n"
        "9,Émaillé,vert,,square,,  \r\n"
    ).encode()
    path = tmp_path / "messy.csv"
    path.write_bytes(data)
    s = make_settings(
        path, id_column="sku", model_column="model", passthrough=("title", "note"),
        template="{title} in {colour}",
    )  # fmt: skip
    rows = read_all(s)
    assert [r.key for r in rows] == ["00123", "0042", "", "9"]
    assert rows[0].prompt == "Mug, large in blue"
    assert rows[0].passthrough == {"title": "Mug, large", "note": "line one\r\nline two"}
    assert rows[0].model == "qwen-image" and rows[0].params == {}
    assert rows[0].problems == []
    assert rows[1].passthrough["title"] == 'Say "hi" cup'
    assert rows[1].params == {"image_size": "16:9", "seed": 7}
    assert [(p.field, p.rule) for p in rows[1].problems] == [("colour", "blank")]
    assert [(p.field, p.rule) for p in rows[2].problems] == [("sku", "required")]
    assert rows[3].params == {"image_size": "square"}
    assert rows[3].passthrough["note"] == "  "
    assert [r.row_number for r in rows] == [1, 2, 3, 4]


def test_csv_row_width_problems(tmp_path: Path) -> None:
    """Any line whose cell count is not the header's is invalid, blank extra cells included,
    and none of its cells is used (not even its key): which one shifted is unknowable."""
    path = tmp_path / "w.csv"
    path.write_text("id,prompt,extra\n1,a cat,x,oops\n2,a dog\n3,a cow,z,\n4,a pig,\n5,,,,\n")
    rows = read_all(make_settings(path))
    assert [[(p.field, p.rule) for p in r.problems] for r in rows] == [
        [("row", "field_count")], [("row", "field_count")], [("row", "field_count")], [],
        [("row", "field_count")],
    ]  # fmt: skip
    assert [r.problems[0].message.split(" has ")[0] for r in rows if r.problems] == [
        "line 2", "line 3", "line 4", "line 6",
    ]  # fmt: skip
    assert "has 4 cells but the header has 3 columns" in rows[2].problems[0].message
    bad = [rows[i] for i in (0, 1, 2, 4)]
    assert [(r.key, r.model, r.prompt, r.params) for r in bad] == [("", None, None, {})] * 4
    assert rows[3].key == "4" and rows[3].prompt == "a pig"


# --------------------------------------------------------------------------- equivalence

TABLE = pd.DataFrame(
    {
        "sku": ["00123", "0042", "7", "x-1"],
        "prompt": ["a red mug", "  a blue cup ", "a lamp", "a chair"],
        "model": ["", "qwen2-image", "qwen2-image", "qwen-image"],
        "image_size": ["landscape_4_3", "", "4:3", ""],
        "seed": pd.array([None, 42, 0, None], dtype="Int64"),
        "photo": ["p/a.png", "", "https://x.test/b.jpg", ""],
        "category": ["kitchen", "kitchen, bar", "lighting\nindoor", ""],
    }
)


def write_all_formats(tmp_path: Path) -> dict[str, Path]:
    paths = {f: tmp_path / f"table.{f}" for f in ("csv", "parquet", "jsonl")}
    TABLE.to_csv(paths["csv"], index=False)
    TABLE.to_parquet(paths["parquet"], index=False)
    with paths["jsonl"].open("w", encoding="utf-8") as fh:
        for record in TABLE.astype(object).where(TABLE.notna(), None).to_dict("records"):
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return paths


def test_csv_parquet_jsonl_give_the_same_rows(tmp_path: Path) -> None:
    results = {}
    for fmt, path in write_all_formats(tmp_path).items():
        s = make_settings(
            path, id_column="sku", model_column="model", reference_column="photo",
            passthrough=("category",), params={"output_format": "jpeg"},
        )  # fmt: skip
        results[fmt] = [as_tuple(r) for r in read_all(s)]
    assert results["csv"] == results["parquet"] == results["jsonl"]
    rows = results["csv"]
    assert [r[2] for r in rows] == ["00123", "0042", "7", "x-1"]
    assert rows[1][4] == "a blue cup"
    assert rows[1][5] == {"output_format": "jpeg", "seed": 42}
    assert rows[2][5] == {"output_format": "jpeg", "image_size": "4:3", "seed": 0}
    assert rows[0][6] == "p/a.png" and rows[1][6] is None
    assert rows[2][7] == {"category": "lighting\nindoor"}


def test_parquet_numbers_become_key_strings(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    frame = pd.DataFrame({"id": [101, 102], "prompt": ["a", "b"], "price": [1.5, float("nan")]})
    frame.to_parquet(path, index=False)
    rows = read_all(make_settings(path, passthrough=("price",)))
    assert [r.key for r in rows] == ["101", "102"]
    assert [r.passthrough["price"] for r in rows] == ["1.5", ""]


def test_cell_text() -> None:
    assert [cell_text(v) for v in (None, float("nan"), 3.0, 2.5, True, 7, "007")] == [
        "", "", "3", "2.5", "true", "7", "007",
    ]  # fmt: skip


# --------------------------------------------------------------------------- JSONL


def test_jsonl_bad_lines_are_row_problems(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"id": "a", "prompt": "one"}\n'
        b"\n"
        b'{"id": "b", "prompt": "two"\n'
        b'["not", "an", "object"]\n'
        b'{"id": 3, "prompt": "three", "extra": {"k": 1}}\n'
    )
    rows = read_all(make_settings(path))
    assert [r.key for r in rows] == ["a", "", "", "3"]
    assert rows[1].problems[0].rule == "bad_json" and "line 3" in rows[1].problems[0].message
    assert "line 4" in rows[2].problems[0].message
    assert rows[0].problems == rows[3].problems == []
    assert rows[3].prompt == "three"


# --------------------------------------------------------------------------- streaming


def test_batches_stream_in_order(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    n = 2503
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt"])
        writer.writerows([f"{i:06d}", f"prompt {i}"] for i in range(n))
    batches = list(Manifest.open(make_settings(path, batch_size=100), CATALOG).iter_batches())
    assert len(batches) == 26
    assert [len(b) for b in batches] == [100] * 25 + [3]
    keys = [r.key for b in batches for r in b]
    assert keys == [f"{i:06d}" for i in range(n)]
    assert [r.index for b in batches for r in b] == list(range(n))


def test_iteration_is_lazy(tmp_path: Path) -> None:
    """The first batch arrives before the reader reaches a broken byte at the end of the file."""
    path = tmp_path / "tail.csv"
    body = "id,prompt\n" + "".join(f"{i},p\n" for i in range(20_000))
    path.write_bytes(body.encode() + b"99,caf\xe9\n")
    batches = Manifest.open(make_settings(path, batch_size=50), CATALOG).iter_batches()
    first = next(batches)
    assert [r.key for r in first] == [str(i) for i in range(50)]
    with pytest.raises(UsageError, match="not UTF-8"):
        for _ in batches:
            pass


def test_parquet_batches(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    pd.DataFrame({"id": [str(i) for i in range(1234)], "prompt": ["p"] * 1234}).to_parquet(
        path, index=False, row_group_size=500
    )
    manifest = Manifest.open(make_settings(path, batch_size=200), CATALOG)
    assert manifest.row_count == 1234
    sizes = [len(b) for b in manifest.iter_batches()]
    assert sum(sizes) == 1234 and max(sizes) <= 200


# --------------------------------------------------------------------------- templates


def test_template_rendering_and_literal_braces(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,title,colour,size label\n1,Mug, blue ,XL\n2,Cup,,S\n")
    s = make_settings(path, template="{{brand}} {title} in {colour} ({size label}) {{}}")
    rows = read_all(s)
    assert rows[0].prompt == "{brand} Mug in blue (XL) {}"
    assert rows[0].problems == []
    assert [(p.field, p.rule) for p in rows[1].problems] == [("colour", "blank")]
    assert parse_template("{a}{b}{a}").columns == ("a", "b")


def test_unknown_placeholder_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,title,colour\n1,Mug,blue\n")
    with pytest.raises(UsageError) as info:
        Manifest.open(make_settings(path, template="{title} in {color}"), CATALOG)
    text = str(info.value)
    assert "{color}" in text and "did you mean {colour}" in text and "id, title, colour" in text
    assert "--template" in (info.value.where or "")


@pytest.mark.parametrize("template", ["{0}", "{}", "a {b!r}", "x } y"])
def test_malformed_templates(template: str) -> None:
    with pytest.raises(UsageError, match="template"):
        parse_template(template, "generation.template")


# --------------------------------------------------------------------------- params


def test_param_merge_precedence(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "id,prompt,model,size,seed,nsfw_checker\n"
        "1,a,qwen2-image,,,\n"  # job + per-model defaults only
        "2,b,qwen2-image,9:16,12,TRUE\n"  # cells win, normalized
        "3,c,qwen-image,landscape_16_9,5,true\n"  # seed/nsfw_checker: not qwen-image params
        "4,d,,,,\n"
    )
    s = make_settings(
        path,
        model_column="model",
        params={"output_format": "jpeg", "image_size": "square", "seed": 1},
        params_by_model={"qwen2-image": {"image_size": "1:1", "output_format": "png"}},
        param_columns={"image_size": "size"},
    )
    rows = read_all(s)
    assert rows[0].params == {"output_format": "png", "image_size": "1:1", "seed": 1}
    assert rows[1].params == {
        "output_format": "png", "image_size": "9:16", "seed": 12, "nsfw_checker": "true",
    }  # fmt: skip
    assert rows[2].params == {"output_format": "jpeg", "image_size": "landscape_16_9"}
    assert rows[3].model == "qwen-image" and rows[3].params == {
        "output_format": "jpeg", "image_size": "square",
    }  # fmt: skip
    assert all(r.problems == [] for r in rows)


def test_unknown_row_model_gets_no_params(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,prompt,model,seed\n1,a,qwen9,4\n")
    (row,) = read_all(make_settings(path, model_column="model", params={"output_format": "png"}))
    assert row.model == "qwen9" and row.params == {}
    assert CATALOG.validate(row.model, row.prompt, row.params)[0].rule == "unknown_model"


# --------------------------------------------------------------------------- open errors


def csv_file(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


OPEN_ERRORS = [
    # file content (None = missing), settings flags, text in message, text in where
    (None, {}, "not found", "--manifest"),
    ("", {}, "empty", "m.csv"),
    ("\n\n", {}, "empty", "m.csv"),
    ("sku,prompt\n1,a\n", {}, "id column 'id' not found", "--id-column"),
    ("id,text\n1,a\n", {}, "prompt column 'prompt' not found", "--prompt-column"),
    ("id,prompt\n1,a\n", {"model_column": "engine"}, "model column 'engine'", "--model-column"),
    ("id,prompt\n1,a\n", {"reference_column": "pic"}, "reference column 'pic'", "--reference"),
    ("id,prompt\n1,a\n", {"passthrough": "title"}, "passthrough column 'title'", "--passthrough"),
    ("id,prompt\n1,a\n", {"param_columns": {"seed": "s"}}, "param 'seed' column 's'", "param"),
    ("id,prompt\n1,a\n", {"model": None}, "no model given", "generation.model"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "flags", "message", "where"), OPEN_ERRORS)
def test_open_errors(
    tmp_path: Path, content: str | None, flags: dict[str, Any], message: str, where: str
) -> None:
    path = tmp_path / "m.csv"
    if content is not None:
        path.write_text(content)
    s = make_settings(path, **flags)
    if flags.get("model", "") is None:
        s = resolve_settings(None, {"manifest": str(path)}, {}, cwd=tmp_path)
    with pytest.raises(UsageError) as info:
        Manifest.open(s, CATALOG)
    assert message in str(info.value)
    assert where in (info.value.where or "")
    assert info.value.fix


def test_open_error_lists_columns_and_suggests(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "SKU,prompt\n1,a\n")
    with pytest.raises(UsageError) as info:
        Manifest.open(make_settings(path, id_column="sku"), CATALOG)
    assert "did you mean 'SKU'" in str(info.value) and "columns are: SKU, prompt" in str(info.value)


def test_corrupt_and_mislabelled_files(tmp_path: Path) -> None:
    parquet = tmp_path / "real.parquet"
    pd.DataFrame({"id": ["1"], "prompt": ["a"]}).to_parquet(parquet)
    fake_csv = tmp_path / "real.csv"
    fake_csv.write_bytes(parquet.read_bytes())
    with pytest.raises(UsageError, match="looks like a Parquet"):
        Manifest.open(make_settings(fake_csv), CATALOG)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(UsageError, match="not a readable Parquet"):
        Manifest.open(make_settings(broken), CATALOG)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,prompt\n1,café\n".encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8"):
        read_all(make_settings(latin))
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(UsageError, match="folder"):
        Manifest.open(make_settings(folder), CATALOG)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n[1]\n")
    with pytest.raises(UsageError, match="no JSON object"):
        Manifest.open(make_settings(junk), CATALOG)


def test_header_only_csv_yields_nothing(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "id,prompt\r\n")
    assert read_all(make_settings(path)) == []


# --------------------------------------------------------------------------- round trip property

CELL = st.text(
    alphabet=st.one_of(
        st.sampled_from([",", '"', "\n", "\r", " ", "'", ";", "\t", "é", "😀", "中"]),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cells=st.lists(st.tuples(CELL, CELL), min_size=1, max_size=8))
def test_pandas_written_cells_read_back_identically(tmp_path: Path, cells: list[Any]) -> None:
    frame = pd.DataFrame(
        {
            "id": [f"0{i}" for i in range(len(cells))],
            "prompt": ["p"] * len(cells),
            "a": [a for a, _ in cells],
            "b": [b for _, b in cells],
        }
    )
    csv_path, pq_path = tmp_path / "rt.csv", tmp_path / "rt.parquet"
    # CRLF row ends make the csv writer quote any cell holding \r or \n (with "\n" it leaves a
    # lone "\r" unquoted, which no reader can tell from a row end).
    frame.to_csv(csv_path, index=False, lineterminator="\r\n", encoding="utf-8-sig")
    frame.to_parquet(pq_path, index=False)
    expected = [{"a": a, "b": b} for a, b in cells]
    for path in (csv_path, pq_path):
        rows = read_all(make_settings(path, passthrough=("a", "b")))
        assert [r.passthrough for r in rows] == expected
        assert [r.key for r in rows] == list(frame["id"])


# --------------------------------------------------------------------------- the sample jobs


def sample_rows(name: str) -> list[RowSpec]:
    settings = resolve_settings(REPO / "jobs" / name, {}, {}, cwd=REPO)
    return read_all(settings)


def test_sample_job_rows_and_deliberate_mistakes() -> None:
    rows = sample_rows("sample.toml")
    assert len(rows) == 20
    assert rows[0].key == "00101"
    assert all(r.problems == [] for r in rows)
    espresso = next(r for r in rows if r.key == "00102")
    assert espresso.passthrough["title"] == "espresso cup, set of 2"
    assert "espresso cup, set of 2" in (espresso.prompt or "")
    assert {r.model for r in rows} == {"qwen-image", "qwen2-image"}
    photos = REPO / "jobs" / "sample"
    invalid = {}
    for row in rows:
        assert row.model is not None
        refs = []
        if row.reference:
            data = (photos / row.reference).read_bytes()
            assert len(data) < 50_000
            mime = sniff_mime(data[:16])
            refs.append(ReferenceInfo("image", mime, len(data), row.reference))
        problems = CATALOG.validate(row.model, row.prompt, row.params, refs)
        if problems:
            invalid[row.key] = {(p.field, p.rule) for p in problems}
    assert invalid == {
        "00118": {("params.image_size", "option")},
        "00119": {("reference", "mime")},
    }


def test_parquet_sample_matches_csv_sample() -> None:
    csv_rows = sample_rows("sample.toml")
    pq_rows = sample_rows("catalog-parquet.toml")
    assert [r.key for r in pq_rows] == [r.key for r in csv_rows]
    assert [r.model for r in pq_rows] == [r.model for r in csv_rows]
    by_key = {r.key: r for r in pq_rows}
    assert by_key["00103"].params["seed"] == 1234
    assert by_key["00101"].params == {"output_format": "jpeg", "image_size": "square_hd"}
    assert by_key["00113"].params["image_size"] == "4:3"
    assert CATALOG.validate("qwen2-image", "x", by_key["00118"].params)[0].rule == "option"


# --------------------------------------------------------------------------- encodings and delimiters


def test_encodings_and_delimiters_of_spreadsheet_exports(tmp_path: Path) -> None:
    text = 'id{d}prompt{d}title\r\n1{d}a café mug{d}Émaillé\r\n2{d}a 20€ vase{d}"a{d}b"\r\n'
    cases = [  # encoding written, delimiter, encoding setting, delimiter setting
        ("cp1252", ";", "cp1252", "auto"),
        ("cp1252", ";", "windows-1252", ";"),
        ("utf-16", "\t", "utf-16", "auto"),  # Excel's "Unicode text"
        ("utf-8-sig", "|", "utf-8", "auto"),
        ("utf-8", "\t", "UTF8", "tab"),
    ]
    for written, d, encoding, delimiter in cases:
        path = tmp_path / "x.csv"
        path.write_bytes(text.format(d=d).encode(written))
        s = make_settings(path, encoding=encoding, delimiter=delimiter, passthrough=("title",))
        rows = read_all(s)
        got = [(r.key, r.prompt, r.passthrough["title"]) for r in rows]
        assert got == [("1", "a café mug", "Émaillé"), ("2", "a 20€ vase", f"a{d}b")], written
        assert all(r.problems == [] for r in rows)


def test_delimiter_sniffing_ties_and_single_columns(tmp_path: Path) -> None:
    tie = csv_file(tmp_path, "id;prompt,x\n1;a,b\n")
    with pytest.raises(UsageError) as info:
        Manifest.open(make_settings(tie, delimiter="auto"), CATALOG)
    assert "',' and ';' both split it into 2 columns" in str(info.value)
    assert "--delimiter" in (info.value.where or "") and "manifest.delimiter" in (
        info.value.fix or ""
    )
    quoted = csv_file(tmp_path, '"id;x",prompt,"a;b"\n1,p,q\n', "q.csv")
    manifest = Manifest.open(make_settings(quoted, delimiter="auto", id_column="id;x"), CATALOG)
    assert manifest.delimiter == "," and manifest.columns == ["id;x", "prompt", "a;b"]
    semicolons = csv_file(tmp_path, "id;prompt\n1;a cat\n", "e.csv")
    with pytest.raises(UsageError) as info:
        Manifest.open(make_settings(semicolons), CATALOG)
    assert "if the file is ';'-delimited, set manifest.delimiter = \";\"" in str(info.value)
    single = csv_file(tmp_path, "prompt\na cat\n", "s.csv")
    manifest = Manifest.open(make_settings(single, delimiter="auto", id_column="prompt"), CATALOG)
    assert manifest.delimiter == ","


def test_an_undecodable_byte_is_located_across_read_chunks(tmp_path: Path) -> None:
    """Line and byte offset stay exact past the first megabyte, with a BOM, CRLF, a lone CR,
    quoted line breaks and a two-byte character cut by a read chunk's end."""
    head = "\ufeffid,prompt\r\n" + '1,"two\r\nlines"\r' + "2,x\n"
    boundary = 3 + (1 << 20)  # the re-scan reads 1 MiB chunks after the BOM
    rows = boundary // 25 - 10  # of 25 bytes each: they end just before the boundary
    data = (head + "".join(f"{i:07d},a product photo\r\n" for i in range(3, rows))).encode()
    pad = boundary - 1 - len(data) - len("8,\r\n9,")
    data += b"8," + b"x" * pad + "\r\n9,é\r\n10,ok\r\n".encode() + b"11,caf\xe9\r\n"
    assert data.index("é".encode()) == boundary - 1
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    with pytest.raises(UsageError) as info:
        read_all(make_settings(path))
    offset = len(data) - 3
    assert data[offset] == 0xE9
    lines = len(re.findall(rb"\r\n|\r|\n", data[:offset])) + 1
    # header on line 1, row 1 on lines 2-3, row 2 on 4, rows 3 to rows - 1, then 8, 9, 10, 11
    assert lines == 4 + (rows - 3) + 4
    assert info.value.where == f"{path}, line {lines}, byte offset {offset}"
    assert str(info.value).startswith("manifest is not UTF-8 text: byte e9 cannot be decoded")
    assert 'set manifest.encoding = "cp1252"' in (info.value.fix or "")


def test_undecodable_header_and_bytes_cp1252_lacks(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    head = b"id,prompt,colour\n1,a,b\n2,"
    path.write_bytes(head + b"\x81\x8d,c\n")
    with pytest.raises(UsageError) as info:
        read_all(make_settings(path, encoding="cp1252"))
    assert "not cp1252 text: byte 81" in str(info.value)
    assert info.value.where == f"{path}, line 3, byte offset {len(head)}"
    assert 'manifest.encoding = "latin-1"' in (info.value.fix or "")
    path.write_bytes(b"id,pr\xe9,x\n1,a,b\n")
    with pytest.raises(UsageError) as info:
        Manifest.open(make_settings(path), CATALOG)
    assert info.value.where == f"{path}, line 1, byte offset 5"
    path.write_bytes("id\tprompt\n1\ta\n".encode("utf-16"))  # Excel's "Unicode text"
    with pytest.raises(UsageError) as info:
        Manifest.open(make_settings(path), CATALOG)
    assert info.value.where == f"{path}, line 1, byte offset 0"
    assert 'manifest.encoding = "utf-16"' in (info.value.fix or "")


def test_jsonl_encoding_and_undecodable_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    data = '{"id": "a", "prompt": "café"}\n\n{"id": "b", "prompt": "20€"}\n'.encode("cp1252")
    path.write_bytes(data)
    rows = read_all(make_settings(path, encoding="cp1252"))
    assert [r.prompt for r in rows] == ["café", "20€"]
    with pytest.raises(UsageError) as info:  # as UTF-8: not one line can be read
        Manifest.open(make_settings(path), CATALOG)
    assert "(line 1: not UTF-8 text: byte e9 at byte offset 26" in str(info.value)
    path.write_bytes(b'{"id": "x", "prompt": "plain"}\n' + data)
    offset = len(b'{"id": "x", "prompt": "plain"}\n')
    rows = read_all(make_settings(path))  # as UTF-8: the two lines are row problems
    first, second = (r.problems[0].message for r in rows[1:])
    assert rows[0].prompt == "plain" and rows[0].problems == []
    where = offset + data.index(0xE9)
    assert first.startswith(f"line 2: not UTF-8 text: byte e9 at byte offset {where}")
    where = offset + data.index(0x80)
    assert second.startswith(f"line 4: not UTF-8 text: byte 80 at byte offset {where}")
    assert 'manifest.encoding = "cp1252"' in first
    with pytest.raises(UsageError, match="read line by line"):
        Manifest.open(make_settings(path, encoding="utf-16"), CATALOG)
