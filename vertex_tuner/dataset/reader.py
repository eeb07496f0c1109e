"""Reading dataset files line by line, in bytes, whatever state they are in.

JSONL is read in binary chunks and split on ``\\n`` here, so a 50 MB line, a UTF-8 BOM, CRLF
endings, blank lines and invalid UTF-8 never stop the reader: lines come in blocks (one list per
chunk, so the caller's loop stays tight) with the 1-based number of the block's first line, and
the caller decides what is wrong with each. A line keeps a trailing ``\\r``: JSON parsers take it
as whitespace. CSV/TSV goes through the standard ``csv`` module (quoted fields may span lines);
each row carries the line it starts on.

A line over :data:`MAX_LINE_BYTES` is never held whole: once it passes the limit the rest of it
is read and dropped a chunk at a time, and a :class:`LongLine` stands in its place. So memory
is bounded by the limit, whatever the file holds (a gigabyte with no newline, say).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

#: Bytes read at a time: large enough that splitting costs little per line, small enough that a
#: block and its lines stay in the processor's cache (measured: 4 MB chunks are 20% slower).
CHUNK = 128 * 1024
BOM = b"\xef\xbb\xbf"


#: The longest line read. An example at any model's token limit (131,072 tokens, about half a
#: megabyte of text) is far shorter, so a longer line is a file without newlines or a paste
#: error; it is skipped, never held. At least :data:`CHUNK`: a line inside one chunk is never
#: over it, so only lines that span chunks are measured.
MAX_LINE_BYTES = 64 * 1024 * 1024


class LongLine(bytes):
    """Stands in for a line over the limit: empty, so no parser takes it for JSON, with the
    line's ``size`` in bytes and the ``limit`` it broke."""

    size: int
    limit: int

    def __new__(cls, size: int, limit: int) -> LongLine:
        line = super().__new__(cls)
        line.size = size
        line.limit = limit
        return line


def _chunks(f: BinaryIO, start: int, end: int | None) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) from ``start`` to ``end`` (the end of the file if None), :data:`CHUNK`
    at a time, without the UTF-8 BOM that may open the file."""
    f.seek(start)
    remaining = None if end is None else end - start
    if start == 0:
        if f.read(len(BOM)) == BOM:
            remaining = None if remaining is None else remaining - len(BOM)
            start = len(BOM)
        else:
            f.seek(0)
    while remaining is None or remaining > 0:
        chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield start, chunk
        start += len(chunk)


def _split(chunk: bytes, ends: bool) -> tuple[list[bytes], bytes]:
    """The whole lines of a chunk and the piece after its last newline (empty if none).

    With ``ends`` the lines keep their ``\\n``: ``BytesIO`` finds newlines with ``memchr``,
    four times as fast as ``bytes.split`` compares byte by byte, and a parser takes the
    ``\\n`` as whitespace.
    """
    if not ends:
        lines = chunk.split(b"\n")
        return lines, lines.pop()
    lines = BytesIO(chunk).readlines()
    if not lines or lines[-1].endswith(b"\n"):
        return lines, b""
    return lines, lines.pop()


def iter_blocks(
    path: Path,
    *,
    start: int = 0,
    end: int | None = None,
    first_line: int = 1,
    ends: bool = False,
    marks: list[tuple[int, int]] | None = None,
) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines without their ``\\n``) for each chunk of the file.

    ``start``/``end`` read a byte range that begins at a line start (``split_ranges`` finds
    them); ``first_line`` is the number of the range's first line. Blank lines are included, so
    numbers stay right; a line over :data:`MAX_LINE_BYTES` is a :class:`LongLine`, and always
    the first line of its block. With ``ends`` each line keeps its ``\\n`` (the file's last
    line may have none), which is quicker. ``marks`` is given (line, byte offset) of the first
    line of each block that does not open with a :class:`LongLine`: where a later reader can
    start.
    """
    limit = MAX_LINE_BYTES
    number = first_line
    # Pieces of a line longer than a chunk, ``held`` bytes in all: joined once when its end
    # arrives, never re-copied, and dropped as soon as they pass the limit.
    tail: list[bytes] = []
    held = 0
    # The length so far of a line over the limit, while the rest of it is read and dropped.
    skipped: int | None = None
    with path.open("rb") as f:
        for offset, chunk in _chunks(f, start, end):
            if skipped is not None:
                newline = chunk.find(b"\n")
                if newline < 0:
                    skipped += len(chunk)
                    continue
                yield number, [LongLine(skipped + newline, limit)]
                number += 1
                skipped = None
                chunk = chunk[newline + 1 :]
                offset += newline + 1
            lines, rest = _split(chunk, ends)
            if not lines:  # no newline: the line goes on
                held += len(rest)
                if held > limit:
                    skipped, tail, held = held, [], 0
                elif rest:
                    tail.append(rest)
                continue
            if tail:
                size = held + len(lines[0]) - ends
                tail.append(lines[0])
                lines[0] = LongLine(size, limit) if size > limit else b"".join(tail)
            if marks is not None and not isinstance(lines[0], LongLine):
                marks.append((number, offset - held))
            tail, held = ([rest], len(rest)) if rest else ([], 0)
            yield number, lines
            number += len(lines)
    if skipped is not None:
        yield number, [LongLine(skipped, limit)]
    elif tail:
        yield number, [b"".join(tail)]


def iter_lines(
    path: Path, *, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without ``\\r\\n``) for every line, blank ones included."""
    for number, lines in iter_blocks(path, start=start, end=end, first_line=first_line):
        for offset, line in enumerate(lines):
            yield number + offset, line if isinstance(line, LongLine) else line.removesuffix(b"\r")


def iter_line_starts(path: Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line without ``\\n``) for every line, as :func:`iter_blocks` reads them."""
    with path.open("rb") as f:
        offset = len(BOM) if f.read(len(BOM)) == BOM else 0
    for _, lines in iter_blocks(path):
        for line in lines:
            yield offset, line
            offset += (line.size if isinstance(line, LongLine) else len(line)) + 1


def _rest_of_line(f: BinaryIO) -> int:
    """Read past the next newline (or to the end), a chunk at a time, holding none of it: the
    bytes before the newline. ``readline`` would hold a huge line whole."""
    skipped = 0
    while chunk := f.read(CHUNK):
        newline = chunk.find(b"\n")
        if newline >= 0:
            f.seek(newline + 1 - len(chunk), 1)
            return skipped + newline
        skipped += len(chunk)
    return skipped


def _ranges(
    path: Path, weights: list[float], cut_at: Callable[[BinaryIO, int, int], int]
) -> list[tuple[int, int]]:
    """(start, end) byte ranges sized by ``weights``; ``cut_at(file, previous cut, rough cut)``
    moves each rough cut to where a range may begin. Empty ranges (a file with fewer lines than
    parts) are left out, except the first."""
    size = path.stat().st_size
    total = sum(weights)
    bounds = [0]
    acc = 0.0
    with path.open("rb") as f:
        for weight in weights[:-1]:
            acc += weight
            rough = max(bounds[-1], int(size * acc / total))
            bounds.append(min(max(cut_at(f, bounds[-1], rough), bounds[-1]), size))
    bounds.append(size)
    ranges = [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]
    return [r for r in ranges if r[1] > r[0] or r[0] == 0]


def split_ranges(path: Path, weights: list[float]) -> list[tuple[int, int]]:
    """(start, end) byte ranges sized by ``weights``, each beginning at a line start.

    Empty ranges (a file with fewer lines than parts) are left out, except the first.
    """

    def at_line_start(f: BinaryIO, previous: int, cut: int) -> int:
        if cut == 0:
            return 0
        # Step back one byte: a cut that lands just after a newline stays where it is.
        f.seek(cut - 1)
        _rest_of_line(f)
        return f.tell()

    return _ranges(path, weights, at_line_start)


def split_csv_ranges(path: Path, weights: list[float]) -> list[tuple[int, int]]:
    """:func:`split_ranges` for a CSV/TSV file: each cut is moved on to the first newline with
    an even number of ``"`` bytes before it, where in standard quoting no quoted field is
    open (one may span lines). A file that quotes otherwise (a quote inside an unquoted field)
    can still be cut inside a field: :func:`iter_csv_fields` reading the range before the cut
    then stops, and the caller reads the file in one pass instead.
    """
    quotes = 0  # quote bytes before the previous cut

    def past_open_fields(f: BinaryIO, at: int, cut: int) -> int:
        nonlocal quotes
        f.seek(at)
        # Count the quotes up to the rough cut, a chunk at a time ...
        while at < cut and (chunk := f.read(min(CHUNK, cut - at))):
            quotes += chunk.count(b'"')
            at += len(chunk)
        # ... then go on to the first newline with no field open (the end, if none).
        while chunk := f.read(CHUNK):
            pos = 0
            while (newline := chunk.find(b"\n", pos)) >= 0:
                quotes += chunk.count(b'"', pos, newline + 1)
                pos = newline + 1
                if quotes % 2 == 0:
                    return at + pos
            quotes += chunk.count(b'"', pos)
            at += len(chunk)
        return at  # the end of the file: no such newline

    return _ranges(path, weights, past_open_fields)


class ReadStopped(str):
    """An error after which :func:`iter_csv_fields` read nothing more (broken quoting)."""


class _LineTooLong(Exception):
    """Raised from inside the ``csv`` reader's input: a physical line over the limit."""

    def __init__(self, line: int, size: int, limit: int) -> None:
        super().__init__(line)
        self.line = line
        self.long = LongLine(size, limit)


def _csv_lines(
    path: Path,
    bad_lines: list[int],
    marks: list[tuple[int, int]],
    start: int,
    first_line: int,
    end: int | None = None,
) -> Iterator[str]:
    """The lines of a CSV file from ``start`` (each keeps its ``\\n``, which a quoted field may
    hold), decoded a block at a time. The number of a line that is not UTF-8 goes to
    ``bad_lines`` (it is decoded with replacement characters); a line over the limit raises
    :class:`_LineTooLong`; ``marks`` is given each block's start (see :func:`iter_blocks`)."""
    blocks = iter_blocks(path, start=start, end=end, first_line=first_line, ends=True, marks=marks)
    for first, lines in blocks:
        head = lines[0]
        if isinstance(head, LongLine):
            raise _LineTooLong(first, head.size, head.limit)
        try:
            texts = [line.decode("utf-8") for line in lines]
        except UnicodeDecodeError:
            texts = []
            for number, line in enumerate(lines, first):
                try:
                    texts.append(line.decode("utf-8"))
                except UnicodeDecodeError:
                    bad_lines.append(number)
                    texts.append(line.decode("utf-8", "replace"))
        yield from texts


def iter_csv_fields(
    path: Path,
    *,
    delimiter: str,
    start: int = 0,
    end: int | None = None,
    first_line: int = 1,
    header: list[str] | None = None,
    starts: list[tuple[int, int]] | None = None,
    read: list[int] | None = None,
) -> Iterator[tuple[int, list[str] | None, str | LongLine | None]]:
    """What :func:`iter_csv_rows` reads, each row as its list of fields: first ``(0, header,
    None)``, then ``(line, fields, error)`` for every data row.

    Given the ``header``, it reads from ``start`` (the byte offset of a row's first line, number
    ``first_line``) and yields no header; it stops at ``end`` (a row's first byte, as
    :func:`split_csv_ranges` cuts). ``starts`` is given (line, byte offset) of rows that begin
    a block (see :func:`iter_blocks`): where a later reader can start, past quoted fields that
    span lines. ``read`` is given, once the reading ends without stopping, the number of the
    last line read. An error after which nothing more was read is a :class:`ReadStopped` or a
    :class:`LongLine`.
    """
    bad_lines: list[int] = []
    marks: list[tuple[int, int]] = []
    lines = _csv_lines(path, bad_lines, marks, start, first_line, end)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    base = first_line - 1
    row = first_line
    try:
        if header is None:
            header = next(reader, None)
            if header is None:
                return
            yield 0, header, None
            row = base + reader.line_num + 1
        width = len(header)
        k = 0  # the next of ``marks`` that may start a row
        for fields in reader:
            last = base + reader.line_num
            if starts is not None and k < len(marks) and marks[k][0] <= row:
                while k < len(marks) and marks[k][0] < row:
                    k += 1
                if k < len(marks) and marks[k][0] == row:
                    starts.append(marks[k])
            if bad_lines and bad_lines[0] <= last:
                bad = [n for n in bad_lines if n <= last]
                del bad_lines[: len(bad)]
                yield bad[0], None, "not UTF-8; save the file as UTF-8"
            elif len(fields) > width:
                yield row, None, "the row has more fields than the header"
            elif len(fields) < width and fields:
                yield row, None, "the row has fewer fields than the header"
            elif fields:
                yield row, fields, None
            row = last + 1
    except csv.Error as exc:
        message = f"CSV error in the row that starts here: {exc}; the rest was not read"
        yield row, None, ReadStopped(message)
    except _LineTooLong as exc:
        yield exc.line, None, exc.long
    else:
        if read is not None:
            read.append(base + reader.line_num)


def iter_csv_rows(
    path: Path, *, delimiter: str
) -> Iterator[tuple[int, dict[str, str] | None, str | LongLine | None]]:
    """(line, row, error) for every data row of a CSV/TSV file with a header row.

    ``line`` is the physical line the row starts on (quoted fields may span lines). A row with
    bytes that are not UTF-8, or with more or fewer fields than the header, comes with an error
    and the reading goes on; broken quoting stops it (nothing after it can be trusted), and so
    does a line over :data:`MAX_LINE_BYTES`, whose error is a :class:`LongLine` (it may be
    inside a quoted field, so the rows after it cannot be told apart).
    """
    header: list[str] = []
    for line, fields, error in iter_csv_fields(path, delimiter=delimiter):
        if line == 0 and fields is not None:
            header = fields
        else:
            row = None if fields is None else dict(zip(header, fields, strict=True))
            yield line, row, error
