"""Manifest readers: CSV, Parquet and JSONL, streamed in batches of :class:`RowSpec`.

Every cell is read as text (a SKU ``00123`` stays ``00123``; a Parquet integer becomes its
decimal string; null/NaN become blank), so the same table gives the same rows in every format.
File-level problems (missing file, missing column, bad template) raise
:class:`~batchgen.errors.UsageError` in :meth:`Manifest.open`, before anything is sent. Row-level
problems (blank id, blank template input, a malformed line) are recorded on the row as
:class:`~batchgen.job.catalog.Violation` naming the column, and never stop the other rows.

CSV is read with the standard ``csv`` module (quoted delimiters and newlines, CRLF, a BOM), not
pandas, so that a malformed line is one row's problem rather than a parser error for the whole
file, and no cell is ever type-guessed. A line whose cell count differs from the header's is
invalid as a whole (``field_count``): none of its cells is used, not even its key, since any of
them may have shifted. The text encoding and delimiter come from ``manifest.encoding`` and
``manifest.delimiter`` (see :mod:`batchgen.job.textfile`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import difflib
import json
import math
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.errors import UsageError
from batchgen.job import storage
from batchgen.job.catalog import Catalog, Violation
from batchgen.job.template import parse_template
from batchgen.job.textfile import (
    ascii_compatible,
    codec,
    decode_error,
    delimiter_hint,
    display_name,
    encoding_fix,
    sniff_delimiter,
    suggest_encoding,
)
from batchgen.job.variants import VariantMatrix

if TYPE_CHECKING:
    from batchgen.job.settings import Settings

PARQUET_MAGIC = b"PAR1"

# The settings that decide how a row's cells map to a request (see Manifest.context). Every
# other setting changes how a run goes, not what a row asks for.
MAPPING_SETTINGS = (
    "manifest_format",
    "encoding",
    "delimiter",
    "id_column",
    "model",
    "model_column",
    "prompt_column",
    "reference_column",
    "template",
    "passthrough",
    "param_columns",
    "params",
    "params_by_model",
)


@dataclass(slots=True)
class RowSpec:
    """One manifest row, mapped to a generation request (not yet validated against the catalog)."""

    index: int
    row_number: int
    key: str
    model: str | None
    prompt: str | None
    params: dict[str, Any]
    reference: str | None
    passthrough: dict[str, Any]
    problems: list[Violation] = field(default_factory=list)
    aspect: str | None = None  # portable aspect ("16:9"): a column or generation.params.aspect


class RawRow:
    """One manifest row as read: its key and cells. Mapping it to a :class:`RowSpec` (templating,
    params, pass-through) is deferred to :meth:`spec`, which a re-run can often skip."""

    __slots__ = ("_manifest", "_spec", "index", "key", "names", "problems", "reference", "values")

    def __init__(
        self,
        manifest: Manifest,
        index: int,
        key: str,
        reference: str | None,
        names: Sequence[str],
        values: Sequence[str],
        problems: list[Violation] | None,
    ) -> None:
        self._manifest = manifest
        self._spec: RowSpec | None = None
        self.index = index
        self.key = key
        self.reference = reference
        self.names = names
        self.values = values
        self.problems = problems

    @property
    def row_number(self) -> int:
        return self.index + 1

    def spec(self) -> RowSpec:
        """The row mapped to a request (built once)."""
        if self._spec is None:
            cells = dict(zip(self.names, self.values, strict=False))
            self._spec = self._manifest._row(self.index, cells, list(self.problems or ()))
        return self._spec

    def text(self) -> str:
        """All cells as one string (see :meth:`Manifest.row_text`)."""
        return self._manifest.row_text(self)

    def param_default(self, key: str, column: str) -> str | None:
        """The job-file setting that gave param ``key`` its value, when the row's ``column``
        cell is blank and the job sets a default; None when the value is the row's own."""
        names = list(self.names)
        at = len(names) - 1 - names[::-1].index(column) if column in names else -1
        if 0 <= at < len(self.values) and self.values[at].strip():
            return None
        s = self._manifest.settings
        model = self.spec().model
        if model is not None and key in s.params_by_model.get(model, {}):
            return f'generation.params_by_model."{model}".{key}'
        return f"generation.params.{key}" if key in s.params else None


# --------------------------------------------------------------------------- cells


def cell_text(value: Any) -> str:
    """A cell as text: None/NaN -> ``""``, ``42.0`` -> ``"42"``, bools -> ``"true"``/``"false"``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):
        return "" if value.is_nan() else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# --------------------------------------------------------------------------- manifest


class Manifest:
    """An opened, checked manifest; :meth:`iter_batches` streams it as RowSpec batches."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        path: Path,
        fmt: str,
        columns: list[str],
        row_count: int | None,
        delimiter: str = ",",
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.path = path
        self.format = fmt
        self.columns = columns
        self.row_count = row_count  # known up front for Parquet only
        self.delimiter = delimiter  # of a CSV manifest, sniffed when the setting is "auto"
        self.template = (
            parse_template(settings.template, settings.where("template"))
            if (settings.template is not None)
            else None
        )
        self._param_columns = _param_columns(settings, catalog, set(columns))
        # Per model: its normalized job defaults, and (param key, column) pairs to read per row.
        self._model_params: dict[str, tuple[dict[str, Any], list[tuple[str, str]]] | None] = {}

    @classmethod
    def open(cls, settings: Settings, catalog: Catalog) -> Manifest:
        """Check the file (exists, readable, format, columns, template) and return a Manifest."""
        if settings.manifest_source == "table":
            return cls._open_table(settings, catalog)
        if settings.manifest_source is None:
            return cls._open_file(settings, catalog, settings.manifest)
        where = f"{settings.manifest_shown}; {settings.where('manifest')}"
        if settings.manifest_source == "-":
            path = storage.stdin_copy()
        else:
            path = storage.spool(settings.manifest_source, where)
        with _named_as(path, settings.manifest_shown):
            return cls._open_file(settings, catalog, path)

    @classmethod
    def _open_file(cls, settings: Settings, catalog: Catalog, path: Path) -> Manifest:
        fmt = settings.manifest_format
        where = f"{settings.manifest_shown}; {settings.where('manifest')}"
        if not path.exists():
            raise UsageError(
                "manifest file not found",
                where,
                "check the path (relative paths in a job file are relative to its folder)",
            )
        if path.is_dir():
            raise UsageError("manifest is a folder, not a file", where, "name the manifest file")
        try:
            with path.open("rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            raise UsageError(
                f"cannot read manifest: {exc.strerror}", where, "check its permissions"
            ) from None
        if not head:
            raise UsageError("manifest file is empty", where, "export the table with a header row")
        if fmt != "parquet" and head.startswith(PARQUET_MAGIC):
            raise UsageError(
                f"manifest looks like a Parquet file but is read as {fmt}",
                f"{path}; {settings.where('manifest_format')}",
                "set manifest.format = 'parquet' or give the file a .parquet suffix",
            )
        row_count: int | None = None
        delimiter = settings.delimiter
        if fmt == "csv":
            if delimiter == "auto":
                at = f"{path}; {settings.where('delimiter')}"
                delimiter = sniff_delimiter(path, settings.encoding, at)
            columns = _csv_header(path, settings.encoding, delimiter, where)
        elif fmt == "parquet":
            columns, row_count = _parquet_header(path, where)
        elif fmt == "jsonl":
            if not ascii_compatible(settings.encoding):
                raise UsageError(
                    f"a JSONL manifest is read line by line, which {settings.encoding} text "
                    "cannot be",
                    f"{path}; {settings.where('encoding')}",
                    "save it as UTF-8 (JSON Lines files are UTF-8)",
                )
            columns = _jsonl_header(path, settings.encoding, where)
        else:
            raise UsageError(
                f"unknown manifest format {fmt!r}",
                settings.where("manifest_format"),
                "use csv, parquet or jsonl",
            )
        _check_columns(
            settings, settings.manifest_shown if settings.manifest_source else path, columns
        )
        _check_model_given(settings)
        return cls(settings, catalog, path, fmt, columns, row_count, delimiter)

    @classmethod
    def _open_table(cls, settings: Settings, catalog: Catalog) -> Manifest:
        """A pandas DataFrame or pyarrow Table given to the Python API, read in batches."""
        table = settings.manifest_table
        columns = [str(c) for c in table.column_names]
        _check_columns(settings, settings.manifest_shown, columns)
        _check_model_given(settings)
        return cls(settings, catalog, settings.manifest, "table", columns, table.num_rows)

    def iter_batches(self) -> Iterator[list[RowSpec]]:
        """Yield lists of at most ``settings.batch_size`` mapped rows, in manifest order."""
        for rows in self.iter_raw_batches():
            yield [row.spec() for row in rows]

    def iter_raw_batches(self) -> Iterator[list[RawRow]]:
        """Yield lists of at most ``settings.batch_size`` rows as read, in manifest order.

        Streams the file: only one batch of rows is held at a time. Can be called again to
        re-read from the start. A row is mapped to its :class:`RowSpec` only when asked.
        """
        size = self.settings.batch_size
        id_column = self.settings.id_column
        ref_column = self.settings.reference_column
        batch: list[RawRow] = []
        last_names: Sequence[str] | None = None
        at = ref_at = -1
        cells = self._iter_cells()
        if self.settings.manifest_source not in (None, "table"):
            cells = _renamed(cells, self.path, self.settings.manifest_shown)
        for index, (names, values, problems) in enumerate(cells):
            if names is not last_names:  # CSV and Parquet rows share one list of names
                last_names = names
                # The last column of a name, as a dict of the row would keep.
                at = max((i for i, n in enumerate(names) if n == id_column), default=-1)
                ref_at = max((i for i, n in enumerate(names) if n == ref_column), default=-1)
            key = values[at].strip() if 0 <= at < len(values) else ""
            ref = values[ref_at].strip() if 0 <= ref_at < len(values) else ""
            batch.append(RawRow(self, index, key, ref or None, names, values, problems))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def context(self) -> str:
        """What, besides a row's own cells, decides how it maps to a request.

        A row whose cells and context are unchanged maps to the same :class:`RowSpec`; the
        planner's re-run fast path relies on that. Covers the format, the header, every mapping
        setting and the catalog (model defaults and param normalization come from it).
        """
        names = self.columns if self.format not in ("parquet", "table") else self._needed_columns()
        mapping = {name: getattr(self.settings, name) for name in MAPPING_SETTINGS}
        return json.dumps([names, mapping, self.catalog.digest()], sort_keys=True, default=_plain)

    def row_text(self, row: RawRow) -> str:
        """A row's cells as one string that differs whenever any cell (or, for JSONL, any name)
        differs: joined by a separator when none holds it, as JSON otherwise."""
        values = row.values
        if self.format != "jsonl":
            joined = "\x1f".join(values)
            if joined.count("\x1f") == len(values) - 1:
                return "T" + joined
            return "J" + json.dumps(list(values), ensure_ascii=False)
        return "J" + json.dumps(dict(zip(row.names, values, strict=True)), sort_keys=True)

    # ------------------------------------------------------------------ readers

    def _iter_cells(
        self,
    ) -> Iterator[tuple[Sequence[str], Sequence[str], list[Violation] | None]]:
        """(names, values, problems) per row; CSV and Parquet rows share one ``names`` list."""
        if self.format == "csv":
            return _iter_csv(self.path, self.columns, self.settings.encoding, self.delimiter)
        if self.format == "parquet":
            return _iter_parquet(self.path, self._needed_columns(), self.settings.batch_size)
        if self.format == "table":
            return _iter_table(
                self.settings.manifest_table, self._needed_columns(), self.settings.batch_size
            )
        return _iter_jsonl(self.path, self.settings.encoding)

    def _needed_columns(self) -> list[str]:
        s = self.settings
        wanted = [s.id_column, s.model_column, s.prompt_column, s.reference_column]
        wanted += list(s.passthrough) + list(self._param_columns.values())
        if self.template is not None:
            wanted += list(self.template.columns)
        for where, text in VariantMatrix.of(s).styles().items():
            wanted += list(parse_template(text, where).columns)
        if s.download_name is not None:
            from batchgen.job.names import parse_download_name

            wanted += list(parse_download_name(s.download_name, "").fields)
        wanted.append(self._param_columns.get("aspect"))
        present = set(self.columns)
        return [c for c in dict.fromkeys(wanted) if c is not None and c in present]

    # ------------------------------------------------------------------ mapping

    def _row(self, index: int, cells: Mapping[str, str], problems: list[Violation]) -> RowSpec:
        s = self.settings
        if problems:  # a line that could not be read (field_count, bad_json): no cell is used
            blank = {c: "" for c in s.passthrough}
            return RowSpec(index, index + 1, "", None, None, {}, None, blank, problems)
        key = cells.get(s.id_column, "").strip()
        if not key:
            problems.append(
                Violation(
                    s.id_column, "required", f"{s.id_column}: the row key is blank (required)"
                )
            )
        model = s.model
        if s.model_column is not None:
            model = cells.get(s.model_column, "").strip() or s.model
        if model is None:
            column = s.model_column or "model"
            problems.append(
                Violation(column, "required", f"{column}: blank, and no default model is set")
            )
        if self.template is not None:
            for column in self.template.columns:
                if not cells.get(column, "").strip():
                    problems.append(
                        Violation(
                            column,
                            "blank",
                            f"{column}: blank, but the prompt template uses it (blank)",
                        )
                    )
            prompt: str | None = self.template.render(cells)
        else:
            prompt = cells.get(s.prompt_column or "", "").strip() or None
        reference = None
        if s.reference_column is not None:
            reference = cells.get(s.reference_column, "").strip() or None
        aspect_column = self._param_columns.get("aspect")
        aspect = cells.get(aspect_column, "").strip() if aspect_column else ""
        if not aspect and model is not None:
            aspect = str(s.params_by_model.get(model, {}).get("aspect", "")).strip()
        aspect = aspect or str(s.params.get("aspect", "")).strip()
        return RowSpec(
            index=index,
            row_number=index + 1,
            key=key,
            model=model,
            prompt=prompt,
            params=self._params(model, cells) if model is not None else {},
            reference=reference,
            passthrough={c: cells.get(c, "") for c in s.passthrough},
            problems=problems,
            aspect=aspect or None,
        )

    def _params(self, model: str, cells: Mapping[str, str]) -> dict[str, Any]:
        """Job defaults, then per-model defaults, then the row's non-blank param cells."""
        if model not in self._model_params:
            self._model_params[model] = self._model_defaults(model)
        known = self._model_params[model]
        if known is None:  # unknown model: the catalog check reports it
            return {}
        defaults, columns = known
        cells_given = {}
        for key, column in columns:
            value = cells.get(column, "").strip()
            if value:
                cells_given[key] = value
        if not cells_given:
            return dict(defaults)
        return self.catalog.normalize_params(model, {**defaults, **cells_given})

    def _model_defaults(self, model: str) -> tuple[dict[str, Any], list[tuple[str, str]]] | None:
        s = self.settings
        spec = self.catalog.get(model)
        if spec is None:
            return None
        params: dict[str, Any] = {k: v for k, v in s.params.items() if k in spec.params}
        params.update(s.params_by_model.get(model, {}))
        columns = [(k, self._param_columns[k]) for k in spec.params if k in self._param_columns]
        if not spec.params_known:  # params the docs do not list: mapped columns are sent as is
            columns += [(k, c) for k, c in s.param_columns.items() if k not in spec.params]
        return self.catalog.normalize_params(model, params), columns


def _plain(value: Any) -> Any:
    """JSON for the mappings and tuples of settings (read-only views included)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return str(value)


# --------------------------------------------------------------------------- checks


def _param_columns(settings: Settings, catalog: Catalog, present: set[str]) -> dict[str, str]:
    """Param key -> column, for every catalog param key that has a column in the manifest."""
    keys: set[str] = set()
    for model_id in catalog.ids():
        spec = catalog.get(model_id)
        if spec is not None:
            keys.update(spec.params)
    keys.add("aspect")  # portable aspect, mapped to each model's own option
    out = {key: key for key in keys if key in present}
    out.update(settings.param_columns)
    return out


def _closest(word: str, choices: Sequence[str]) -> str | None:
    """The column a user probably meant: same name ignoring case, else the closest spelling."""
    for choice in choices:
        if choice.casefold() == word.casefold():
            return choice
    close = difflib.get_close_matches(word, list(choices), n=1)
    return close[0] if close else None


def _check_columns(settings: Settings, path: Path | str, columns: Sequence[str]) -> None:
    present = set(columns)
    listing = (", ".join(columns) if columns else "(none)") + delimiter_hint(columns)

    def missing(column: str, what: str, setting: str, extra_fix: str = "") -> UsageError:
        close = _closest(column, columns)
        hint = f"did you mean {close!r}? " if close else ""
        return UsageError(
            f"{what} column {column!r} not found in the manifest",
            f"{path}; {settings.where(setting)}",
            f"{hint}columns are: {listing}{extra_fix}",
        )

    def check_placeholders(text: str, what: str, where: str) -> None:
        for column in parse_template(text, where).columns:
            if column not in present:
                close = _closest(column, columns)
                hint = f"did you mean {{{close}}}? " if close else ""
                raise UsageError(
                    f"{what} placeholder {{{column}}} is not a manifest column",
                    f"{path}; {where}",
                    f"{hint}columns are: {listing}",
                )

    if settings.id_column not in present:
        raise missing(settings.id_column, "id", "id_column")
    if settings.template is not None:
        check_placeholders(settings.template, "prompt template", settings.where("template"))
    elif (settings.variants or {}).get("styles") and all(
        t.get("styles", True) for t in (settings.variants_by_model or {}).values()
    ):
        pass  # every task's prompt comes from a style
    elif settings.prompt_column is None or settings.prompt_column not in present:
        raise missing(
            settings.prompt_column or "prompt",
            "prompt",
            "prompt_column",
            "; or set generation.template to build prompts from columns",
        )
    if settings.model_column is not None and settings.model_column not in present:
        raise missing(settings.model_column, "model", "model_column")
    if settings.reference_column is not None and settings.reference_column not in present:
        raise missing(settings.reference_column, "reference", "reference_column")
    for column in settings.passthrough:
        if column not in present:
            raise missing(column, "passthrough", "passthrough")
    for key, column in settings.param_columns.items():
        if column not in present:
            raise missing(column, f"param {key!r}", "param_columns")
    matrix = VariantMatrix.of(settings)
    shown = str(settings.job_file) if settings.job_file else "job file"
    for where, text in matrix.styles().items():
        check_placeholders(text, "style", f"{shown}: {where}")
    if settings.download_name is not None:
        from batchgen.job.names import parse_download_name

        name = parse_download_name(settings.download_name, settings.where("download_name"))
        known = {"key", "variant", "ext", *matrix.axes()}
        for column in name.fields:
            if column not in known and column not in present:
                raise UsageError(
                    f"download name placeholder {{{column}}} is not a manifest column"
                    " or a variant axis",
                    f"{path}; {settings.where('download_name')}",
                    f"use {{key}}, {{variant}}, {{ext}}, an axis ({', '.join(matrix.axes()) or 'none'})"
                    f" or a column: {listing}",
                )


# --------------------------------------------------------------------------- CSV


def _csv_rows(
    path: Path, encoding: str, delimiter: str
) -> Generator[tuple[int, list[str]], None, None]:
    """(line number where the record starts, cells) for every non-blank CSV record."""
    with path.open(encoding=codec(encoding), newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        line = 1
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            yield start, cells


def _csv_error(path: Path, encoding: str, exc: Exception, line: int | None) -> UsageError:
    if isinstance(exc, UnicodeDecodeError):
        return decode_error(path, encoding)
    at = f"{path}, near line {line}" if line else str(path)
    return UsageError(f"manifest is not valid CSV: {exc}", at, "fix the quoting on that line")


def _csv_header(path: Path, encoding: str, delimiter: str, where: str) -> list[str]:
    try:
        rows = _csv_rows(path, encoding, delimiter)
        first = next(rows, None)
        rows.close()
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _csv_error(path, encoding, exc, 1) from None
    if first is None:
        raise UsageError("manifest file is empty", where, "export the table with a header row")
    return [name.strip() for name in first[1]]


def _iter_csv(
    path: Path, columns: list[str], encoding: str, delimiter: str
) -> Iterator[tuple[Sequence[str], Sequence[str], list[Violation] | None]]:
    """(columns, cells, problems) per record after the header; one loop (no nested generator),
    as this is the hot path of re-scanning a big manifest. A record whose cell count is not the
    header's comes with no cells at all, only its problem: which cell shifted is unknowable."""
    width = len(columns)
    line = 1
    no_cells: tuple[str, ...] = ()
    try:
        with path.open(encoding=codec(encoding), newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            next_line = 1
            header = True
            for cells in reader:
                start, next_line = next_line, reader.line_num + 1
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if header:
                    header = False
                    continue
                line = start
                if len(cells) != width:
                    yield columns, no_cells, [_field_count(line, len(cells), width, delimiter)]
                    continue
                yield columns, cells, None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _csv_error(path, encoding, exc, line) from None


def _field_count(line: int, cells: int, width: int, delimiter: str) -> Violation:
    shown = "tab" if delimiter == "\t" else repr(delimiter)
    fix = (
        f"quote cells that contain {shown}, and delete cells past the header's last column"
        if cells > width
        else "quote cells that contain line breaks, or add the missing cells"
    )
    return Violation(
        "row",
        "field_count",
        f"line {line} has {cells} cells but the header has {width} columns, so no cell "
        f"of it is used; {fix} (field_count)",
    )


# --------------------------------------------------------------------------- Parquet


def _parquet_header(path: Path, where: str) -> tuple[list[str], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:
            return list(pf.schema_arrow.names), pf.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(
            f"manifest is not a readable Parquet file: {exc}", where, "re-export it as Parquet"
        ) from None


def _iter_parquet(
    path: Path, columns: list[str], batch_size: int
) -> Iterator[tuple[Sequence[str], Sequence[str], list[Violation] | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:
            for record_batch in pf.iter_batches(batch_size=batch_size, columns=columns):
                yield from _batch_rows(record_batch)
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(
            f"manifest is not a readable Parquet file: {exc}", str(path), "re-export it as Parquet"
        ) from None


def _iter_table(
    table: Any, columns: list[str], batch_size: int
) -> Iterator[tuple[Sequence[str], Sequence[str], list[Violation] | None]]:
    """Rows of an in-memory Arrow table, a batch of ``batch_size`` at a time, as Parquet's."""
    for record_batch in table.select(columns).to_batches(max_chunksize=batch_size):
        yield from _batch_rows(record_batch)


def _batch_rows(
    record_batch: Any,
) -> Iterator[tuple[Sequence[str], Sequence[str], list[Violation] | None]]:
    """The rows of an Arrow record batch, each cell as text (:func:`cell_text`)."""
    values = [
        [cell_text(v) for v in record_batch.column(i).to_pylist()]
        for i in range(record_batch.num_columns)
    ]
    names = record_batch.schema.names
    for row in zip(*values, strict=True):
        yield names, row, None


@contextlib.contextmanager
def _named_as(path: Path, shown: str) -> Iterator[None]:
    """Errors about the local copy ``path`` of a manifest name the manifest as the user gave it
    (a URL, standard input) instead."""
    try:
        yield
    except UsageError as exc:

        def named(text: str | None) -> str | None:
            return None if text is None else text.replace(str(path), shown)

        raise UsageError(
            exc.what.replace(str(path), shown), named(exc.where), named(exc.fix)
        ) from None


def _renamed(cells: Iterator[Any], path: Path, shown: str) -> Iterator[Any]:
    with _named_as(path, shown):
        yield from cells


def _check_model_given(settings: Settings) -> None:
    if settings.model is None and settings.model_column is None:
        raise UsageError(
            "no model given",
            "generation.model / --model",
            "set a default model, or a manifest.model_column with a model per row",
        )


# --------------------------------------------------------------------------- JSONL


def _jsonl_lines(path: Path, encoding: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed object or None, error) for every non-blank line."""
    offset = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)  # the line's byte offset in the file
            if number == 1 and encoding == "utf-8" and raw.startswith(codecs.BOM_UTF8):
                raw, start = raw[3:], 3
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode(encoding))
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.end].hex(" ")
                fix = encoding_fix(suggest_encoding(raw, encoding))
                message = (
                    f"not {display_name(encoding)} text: byte {bad} at byte offset "
                    f"{start + exc.start} cannot be decoded; if the whole file is in another "
                    f"encoding, {fix}"
                )
                yield number, None, message
                continue
            except json.JSONDecodeError as exc:
                yield number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                continue
            if not isinstance(obj, dict):
                yield number, None, f"a JSON {type(obj).__name__}, not an object"
                continue
            yield number, obj, None


def _jsonl_header(path: Path, encoding: str, where: str) -> list[str]:
    """Columns of a JSONL manifest: the keys of its first valid object."""
    first_error = ""
    for number, obj, error in _jsonl_lines(path, encoding):
        if obj is not None:
            return [str(k) for k in obj]
        first_error = first_error or f" (line {number}: {error})"
    raise UsageError(
        f"manifest has no JSON object lines{first_error}",
        where,
        'write one object per line, e.g. {"id": "1", "prompt": "..."}',
    )


def _iter_jsonl(
    path: Path, encoding: str
) -> Iterator[tuple[Sequence[str], Sequence[str], list[Violation] | None]]:
    for number, obj, error in _jsonl_lines(path, encoding):
        if obj is None:
            problem = Violation("line", "bad_json", f"line {number}: {error} (bad_json)")
            yield (), (), [problem]
            continue
        yield [str(k) for k in obj], [cell_text(v) for v in obj.values()], None
