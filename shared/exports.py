"""CSV files organisers download and open in a spreadsheet: every text cell neutralised against formulas."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection: `=HYPERLINK(...)` in a name).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A text cell a spreadsheet shows as text (a leading `'`) when it would run as a formula; numbers as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(rows: Iterable[Iterable[Any]]) -> str:
    """The rows (header first) as CSV, every cell neutralised: the one way services write what organisers download."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows([neutralise(cell) for cell in row] for row in rows)
    return out.getvalue()
