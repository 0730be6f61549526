"""A small column-named table that exports to pandas, CSV or JSON without requiring pandas.

In CSV a tuple (a signature) is written ``"2-5-9"`` and a dict as compact JSON.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def require_pandas() -> Any:
    """Import pandas, or raise an ImportError that says how to get it or what to use instead."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is installed in the dev env
        raise ImportError("pandas is needed for DataFrames: pip install 'nnsig[pandas]'. Without "
                          "it, use to_csv(path), to_json() or to_records().") from exc
    return pd


def _plain(v: Any) -> Any:
    if isinstance(v, np.integer | np.floating | np.bool_):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (tuple, list, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _csv_cell(v: Any) -> Any:
    if isinstance(v, (tuple, list, np.ndarray)):
        return "-".join(str(_plain(x)) for x in v)
    if isinstance(v, dict):
        return json.dumps(_plain(v), separators=(",", ":"), sort_keys=True)
    if v is None:
        return ""
    return _plain(v)


class Table:
    """Rows with named columns.

    Parameters
    ----------
    columns : sequence of str
    rows : sequence of tuple
        One tuple per row, in column order.
    """

    def __init__(self, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        self.columns = list(columns)
        self.rows = [tuple(r) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for r in self.rows:
            yield dict(zip(self.columns, r, strict=False))

    def __getitem__(self, i: int | slice) -> Any:
        """Row ``i`` as a dict, or a slice of rows as a new :class:`Table`."""
        if isinstance(i, slice):
            return Table(self.columns, self.rows[i])
        return dict(zip(self.columns, self.rows[i], strict=False))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and self.columns == other.columns and self.rows == other.rows

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Table({len(self)} rows: {', '.join(self.columns)})"

    def __str__(self) -> str:
        """The first rows as aligned text (signatures written ``2-5-9``), like a DataFrame."""
        return self.format()

    def format(self, max_rows: int = 20) -> str:
        """Aligned plain text of the first ``max_rows`` rows, with a count of the rest."""
        cells = [list(self.columns)] + [[str(_csv_cell(v)) for v in r]
                                        for r in self.rows[:max_rows]]
        widths = [max(len(row[j]) for row in cells) for j in range(len(self.columns))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        if len(self.rows) > max_rows:
            lines.append(f"... {len(self.rows) - max_rows} more rows")
        return "\n".join(lines)

    def column(self, name: str) -> list[Any]:
        """The values of one column."""
        j = self.columns.index(name)
        return [r[j] for r in self.rows]

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready list of dicts (tuples become lists)."""
        return [{c: _plain(v) for c, v in zip(self.columns, r, strict=False)} for r in self.rows]

    def to_frame(self) -> Any:
        """A :class:`pandas.DataFrame` (signatures stay tuples; needs pandas)."""
        pd = require_pandas()
        return pd.DataFrame.from_records(self.rows, columns=self.columns)

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """Write CSV to ``path``, or return it as a string when ``path`` is None."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow([_csv_cell(v) for v in r])
        text = buf.getvalue()
        if path is None:
            return text
        Path(path).write_text(text, encoding="utf-8")
        return None

    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        """Write the table as Parquet (signatures become lists of ints; needs pyarrow)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("Parquet needs pyarrow: pip install pyarrow (or choose csv or "
                              "json).") from None
        records = self.to_records()
        pq.write_table(pa.table({c: [r[c] for r in records] for c in self.columns}), str(path))

    def to_hf_dataset(self) -> Any:
        """The table as a Hugging Face ``datasets.Dataset`` (needs ``datasets``)."""
        try:
            import datasets
        except ImportError:
            raise ImportError("A Hugging Face dataset needs the datasets package: pip install "
                              "'nnsig[datasets]' (or choose csv, json or parquet).") from None
        records = self.to_records()
        return datasets.Dataset.from_dict({c: [r[c] for r in records] for c in self.columns})

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int | None = None) -> str:
        """The records as JSON (written to ``path`` too when given)."""
        text = json.dumps(self.to_records(), indent=indent)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text
