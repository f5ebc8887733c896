"""A report's table: typed columns and rows of plain values, shown, exported and served alike.

Rows hold raw values (bytes as integers, moments as aware datetimes); pages format them for
people (IEC units) and keep the raw value beside (`data-value`), CSV and the API give the raw
value, so a page's table and its CSV can be compared cell by cell.
"""

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

# Column kinds: how a value is shown and typed (API schema).
TEXT = "text"
COUNT = "count"
BYTES = "bytes"
RATIO = "ratio"  # 2.5 → "2.50×"
PERCENT = "percent"  # 0..100, one decimal
SECONDS = "seconds"
DATE = "date"
MOMENT = "moment"
KINDS = {TEXT, COUNT, BYTES, RATIO, PERCENT, SECONDS, DATE, MOMENT}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = TEXT
    # A page link for the cell, from the row: the row's value under this key (a URL).
    link: str = ""

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    @property
    def numeric(self) -> bool:
        return self.kind in {COUNT, BYTES, RATIO, PERCENT, SECONDS}


@dataclass
class Table:
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def cells(self) -> list[list[tuple[Column, Any, str]]]:
        """Each row as (column, raw value, link) triples, in column order (for templates)."""
        return [
            [
                (c, row.get(c.key), str(row.get(c.link) or "") if c.link else "")
                for c in self.columns
            ]
            for row in self.rows
        ]


def raw(value: Any) -> str:
    """A value as CSV and `data-value` give it: ISO moments, plain numbers, "" for none."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.label for c in table.columns])
    for row in table.rows:
        writer.writerow([raw(row.get(c.key)) for c in table.columns])
    return out.getvalue()
