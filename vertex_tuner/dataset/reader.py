"""Reading dataset files line by line, in bytes, whatever state they are in.

JSONL is read in large binary chunks and split on ``\\n`` here, so a 50 MB line, a UTF-8 BOM,
CRLF endings, blank lines and invalid UTF-8 never stop the reader: each line is yielded with its
1-based number, and the caller decides what is wrong with it. CSV/TSV goes through the standard
``csv`` module (quoted fields may span lines); each row carries the line it starts on.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from pathlib import Path

CHUNK = 4 * 1024 * 1024
BOM = b"\xef\xbb\xbf"


def iter_lines(
    path: Path, *, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its ending) for every line, blank ones included.

    ``start``/``end`` read a byte range that begins at a line start (``split_ranges`` finds
    them); ``first_line`` is the number of the range's first line.
    """
    number = first_line - 1
    pending = b""
    first = start == 0
    with path.open("rb") as f:
        f.seek(start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
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


def split_ranges(path: Path, parts: int) -> list[tuple[int, int, int]]:
    """(start, end, first line) of ``parts`` byte ranges that each begin at a line start."""
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as f:
        for k in range(1, parts):
            f.seek(max(bounds[-1], size * k // parts))
            f.readline()  # move to the start of the next line
            bounds.append(min(f.tell(), size))
        bounds.append(size)
        ranges = []
        line = 1
        for start, end in itertools.pairwise(bounds):
            ranges.append((start, end, line))
            f.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = f.read(min(CHUNK, remaining))
                remaining -= len(chunk)
                line += chunk.count(b"\n")
    return [r for r in ranges if r[1] > r[0] or r[0] == 0]


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
