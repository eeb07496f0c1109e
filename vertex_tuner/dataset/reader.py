"""Reading dataset files line by line, in bytes, whatever state they are in.

JSONL is read in large binary chunks and split on ``\\n`` here, so a 50 MB line, a UTF-8 BOM,
CRLF endings, blank lines and invalid UTF-8 never stop the reader: each line is yielded with its
1-based number, and the caller decides what is wrong with it. CSV/TSV goes through the standard
``csv`` module (quoted fields may span lines); each row carries the line it starts on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

CHUNK = 4 * 1024 * 1024
BOM = b"\xef\xbb\xbf"


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its ending) for every line, blank ones included."""
    number = 0
    pending = b""
    first = True
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            if first:
                chunk = chunk.removeprefix(BOM)
                first = False
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            for line in lines:
                number += 1
                yield number, line.removesuffix(b"\r")
    if pending:
        yield number + 1, pending.removesuffix(b"\r")


def iter_csv_rows(
    path: Path, *, delimiter: str
) -> Iterator[tuple[int, dict[str, str] | None, str | None]]:
    """(line, row, error) for every data row of a CSV/TSV file with a header row."""
    raw = path.read_bytes().removeprefix(BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        yield line, None, f"not UTF-8 (byte {exc.start}); save the file as UTF-8"
        return
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 2
    try:
        for row in reader:
            if None in row:
                yield start, None, "the row has more fields than the header"
            else:
                yield start, {k: v or "" for k, v in row.items() if k is not None}, None
            start = reader.line_num + 1
    except csv.Error as exc:
        yield reader.line_num, None, f"CSV error: {exc}"
