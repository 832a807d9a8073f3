"""CSV files organisers download and open in a spreadsheet: every text cell neutralised against formulas, and
streamed as the rows are read (issue 20: an export of a million members starts at once and holds one batch)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from starlette.responses import StreamingResponse

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


# Rows fetched from the database at a time by a streamed export: its memory whatever the export's size.
EXPORT_BATCH = 1000


async def csv_chunks(header: Sequence[str], batches: AsyncIterable[Iterable[Iterable[Any]]]) -> AsyncIterator[str]:
    """The header at once, then each batch of rows as CSV (neutralised as `csv_text`): what a streamed export
    sends, one chunk per batch."""
    yield csv_text([header])
    async for rows in batches:
        yield csv_text(rows)


def csv_download(chunks: AsyncIterator[str], filename: str,
                 headers: Mapping[str, str] | None = None) -> StreamingResponse:
    """A CSV download streamed as it is read (first byte at once, constant memory, whatever its size)."""
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"', **(headers or {})})
