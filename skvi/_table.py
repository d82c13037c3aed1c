"""Reading the command line's CSV files into numeric arrays.

A small reader on the standard library's ``csv`` module, so the command
line needs nothing beyond the core dependencies. It reads exactly what the
file holds or stops with an :class:`InputError` whose one-line message
names the file, the line (as a text editor numbers it), the column and the
cell. The rules, also in ``docs/cli.rst`` and ``skvi fit --help``:

* Encoding: UTF-8, with or without the byte-order mark that Excel's
  "CSV UTF-8" writes; UTF-16 with a byte-order mark (Excel's "Unicode
  text"); any other with ``encoding``.
* Delimiter: comma, semicolon or tab, whichever splits the first lines into
  the same number (more than one) of cells; on a tie tab, then semicolon,
  then comma, since a semicolon file's cells may hold decimal commas.
  Runs of blanks and tabs (:data:`WHITESPACE`, as R's ``write.table`` and
  NumPy's ``savetxt`` separate cells) only when chosen: blanks also group
  thousands (``1 250``). A file of one column that they would split says
  so in its error (:func:`split_by_blanks`).
* Comments: lines at the top starting with '#' and a blank (or '#' alone,
  or '##') are skipped, and so are such lines of one cell at the end
  (NumPy's footer); a line starting with Excel's #N/A, or a row of cells
  whose first starts with '# ', is a row. The last comment at the top is
  the header where it has as many cells as the first row and that row
  holds a number (NumPy's ``savetxt(..., header="a,b")`` writes ``#
  a,b``), unless ``header`` is False.
* Decimal separator: a point; a comma in a file not separated by commas
  when some cell is a number written with one (``1,5``). Thousands
  separators are not read: such a cell is an error, and so is a detected
  separator that a column writes as thousands (:func:`_check_thousands`).
* Header: the first row names the columns unless every cell of it is a
  number or missing; then it is data and the columns are named 1, 2, ...
  A first row of numbers quoted over unquoted ones is a header (R quotes
  names: ``"","2019","2020"``). A first row whose text sits only over
  columns of text and whose other cells are numbers is such a header too,
  data where its text is quoted and its numbers are not and are not all
  whole (R's ``write.table(..., col.names=FALSE)``), and otherwise an
  error asking for ``header`` (:func:`_names_columns`).
  A first column whose header cell is empty and whose cells are text or
  distinct whole numbers from 0 up (the rows' numbers, also of the rows a
  filter, sort or shuffle kept: ``0, 1, 3, ...``, R's ``"1"``, ``"3"``)
  holds row names: R's ``write.csv`` and
  pandas' ``to_csv`` write them so (``"","Ozone",...`` then ``"1",41,...``;
  pandas' unnamed columns as ``,0,1,2``, a header). It is named
  ``(row names)`` and is not fitted unless chosen: row numbers are no
  feature. Other numbers under an empty header cell are data. Row names
  are also such a first column where the header has one cell fewer than
  the rows (R's ``write.table`` and ``read.table``'s rule); of other
  numbers, such a file is an error.
* Columns: :func:`feature_columns` fits the numeric ones, less row names
  and columns under an identifier's name (``id``, ``index``, ``user_id``)
  that name the rows (distinct whole numbers, one per row), unless chosen
  by name.
* Cells: a number, or missing (empty, NA, NaN, N/A, #N/A, null, none, ?),
  which becomes NaN. A column whose cells are all text is a text column;
  one with both numbers and text is an error naming the first text cell.
* Rows: blank lines and rows of empty cells before the header, and blank
  lines after the last row, are ignored; after the header, a row of empty
  cells is a row with no value (all NaN; pandas writes a row of NaN as
  ``,,,``), at the end too, so that row i of the results is row i of the
  file.
"""

import codecs
import csv
import io
import math
import re
from dataclasses import dataclass

import numpy as np

# The name of a first column whose header cell is empty: row names.
ROW_NAMES = "(row names)"
MISSING_CELLS = frozenset({"", "na", "nan", "n/a", "#n/a", "null", "none", "?"})

# Runs of blanks and tabs (R's read.table, NumPy's loadtxt), chosen by name.
WHITESPACE = "whitespace"
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", WHITESPACE: WHITESPACE}

# Tab first: a tab never appears in a number; then semicolon, whose files
# may write decimal commas.
_DETECTION_ORDER = ("\t", ";", ",")
_SAMPLE_CHARS = 1 << 16
_SAMPLE_ROWS = 50

# A plain decimal number: what ``float`` reads, less its extras ("inf",
# "nan", "1_000", surrounding blanks), which a spreadsheet never means.
_NUMBER = {
    ".": re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"),
    ",": re.compile(r"[+-]?(?:\d+,?\d*|,\d+)(?:[eE][+-]?\d+)?"),
}


_NAN, _INFINITY = float("nan"), float("inf")


class InputError(ValueError):
    """An input file or option the command line cannot use."""


@dataclass
class Table:
    """The cells of a CSV file, column by column, and how they were read.

    Attributes
    ----------
    path : str
    columns : list of str
        The names of the columns (their numbers, from 1, without a header).
    values : ndarray of shape (n_rows, n_columns)
        The numbers; NaN where a cell is missing or not a number.
    lines : ndarray of shape (n_rows,)
        The line of the file where each row starts.
    numbers : list of (int, str) or None
        Per column, the line and text of its first number.
    texts : list of (int, str) or None
        Per column, the line and text of its first cell that is neither a
        number nor missing.
    delimiter, decimal, encoding : str
    header : bool
        Whether the first row named the columns.
    row_names : bool
        Whether the first column holds row names (its header cell empty,
        or none: a header of one cell fewer than the rows).
    ignored_lines : int
        Blank lines (or rows of empty cells) before the header, and blank
        lines at the end.
    comment_lines : int
        Comment lines at the top (less the header where NumPy's ``savetxt``
        wrote it so, ``# a,b,c``) and at the end (its footer).
    """

    path: str
    columns: list
    values: np.ndarray
    lines: np.ndarray
    numbers: list
    texts: list
    delimiter: str
    decimal: str
    encoding: str
    header: bool
    ignored_lines: int
    row_names: bool = False
    comment_lines: int = 0

    def column(self, name):
        """The index of a named column, or an error listing the names."""
        if name not in self.columns:
            raise InputError(
                f"{self.path} has no column {name!r}; its columns are "
                f"{', '.join(self.columns)}."
            )
        return self.columns.index(name)

    def kind(self, j):
        """'numeric', 'text', 'mixed' (numbers and text) or 'empty'.

        A column whose first text is a number written another way (with
        the other decimal separator, or too large) counts as 'mixed': its
        numbers must not be skipped as text.
        """
        if self.texts[j] is None:
            return "empty" if self.numbers[j] is None else "numeric"
        if self.numbers[j] is None and not self._looks_numeric(self.texts[j][1]):
            return "text"
        return "mixed"

    def _looks_numeric(self, cell):
        return any(number.fullmatch(cell) for number in _NUMBER.values())

    def check_numeric(self, j, alternative=None):
        """Raise unless column ``j`` holds only numbers and missing cells.

        ``alternative``, if given, ends the message: another way out than
        correcting the file (such as leaving the column out).
        """
        name, kind = self.columns[j], self.kind(j)
        if kind == "numeric":
            return
        other = f", or {alternative}" if alternative else ""
        instead = f"; {alternative}" if alternative else ""
        if kind == "empty":
            raise InputError(
                f"Column {name!r} of {self.path} has no value (every cell is "
                f"empty or missing){instead}."
            )
        line, cell = self.texts[j]
        if kind == "text":
            raise InputError(
                f"Column {name!r} of {self.path} holds text, not numbers "
                f"({cell!r} on line {line}){instead}."
            )
        raise InputError(
            f"{self.path}, line {line}, column {name!r}: {cell!r} "
            f"{self._not_a_number(cell)}. Correct the cell (an empty cell is a "
            f"missing value){other}."
        )

    def _not_a_number(self, cell):
        """Why a cell that is not missing is not read as a number."""
        if _NUMBER[self.decimal].fullmatch(cell):
            return "is too large for a floating-point number"
        if self.decimal == "." and _NUMBER[","].fullmatch(cell):
            return (
                "is not a number (thousands separators are not read; for "
                "decimal commas pass --decimal ',')"
            )
        if self.decimal == "," and _NUMBER["."].fullmatch(cell):
            example = next(
                (f[1] for f in self.numbers if f is not None and "," in f[1]), None
            )
            seen = f" (as {example!r})" if example else ""
            return (
                f"is not a number: the file was read with decimal commas{seen}; "
                "write it so, or pass --decimal '.'"
            )
        return "is not a number"

    def description(self):
        """How the file was read, in words."""
        separator = DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))
        separator = "one column" if len(self.columns) == 1 else f"{separator}-separated"
        header = "a header row" if self.header else "no header row"
        point = "comma" if self.decimal == "," else "point"
        return (
            f"{separator}, {header}, decimal {point}, "
            f"{self.encoding.replace('-sig', '').upper()}"
        )


def read_table(path, *, delimiter=None, header=None, decimal=None, encoding=None):
    """Read a CSV file; see the module's docstring for the rules.

    Parameters
    ----------
    path : str
    delimiter : str, default=None
        One character; None detects comma, semicolon or tab.
    header : bool, default=None
        Whether the first row names the columns; None detects it.
    decimal : {'.', ','}, default=None
        None reads a point, or a comma where the file writes numbers so.
    encoding : str, default=None
        None reads UTF-8 (and UTF-16 with a byte-order mark).

    Returns
    -------
    Table
    """
    text, encoding = _decode(path, encoding)
    text, n_comments, comment_header = _leading_comments(text)
    if delimiter is None:
        delimiter = _detect_delimiter(text)
    if delimiter == WHITESPACE:
        # Runs of blanks and tabs separate the cells, as R's read.table and
        # NumPy's loadtxt read them; every line keeps its number.
        text = _collapsed_blanks(text)
        comment_header = comment_header and _collapsed_blanks(comment_header)
    records, n_lines = _records(path, text, delimiter)
    n_footer = _drop_footer(records)
    if not records:
        raise InputError(f"{path} is empty; expected a header row and data rows.")
    ignored = n_lines - records[-1][2] - n_footer
    records = records[next(i for i, r in enumerate(records) if _has_content(r[1])) :]
    # (The comment lines were blanked: they are counted as comments.)
    ignored += records[0][0] - 1 - n_comments
    n_comments += n_footer
    detected = decimal is None
    if detected:
        decimal = _detect_decimal(records, delimiter)
    number = _NUMBER[decimal]

    def holds_numbers(cells):
        return all(
            cell.strip().lower() in MISSING_CELLS or number.fullmatch(cell.strip())
            for cell in cells
        )

    def holds_a_number(cells):
        return any(number.fullmatch(cell.strip()) for cell in cells)

    if comment_header is not None and header is not False:
        # NumPy's savetxt writes its header after '# ' right above the rows:
        # the names of the columns where they are as many and the first row
        # is data (holds a number; a row of names is the header itself).
        names = _cells_of(comment_header, delimiter)
        if len(names) == len(records[0][1]) and holds_a_number(records[0][1]):
            records = [(records[0][0] - 1, names, records[0][0] - 1), *records]
            header, n_comments = True, n_comments - 1
    if header is None:
        if holds_numbers(records[0][1]):
            # Numbers; a header only where quoted as R quotes names.
            header = _counted_header(records[0][1]) or _quoted_names(
                text, records, number, delimiter
            )
        else:
            header = _names_columns(path, text, records, number, delimiter)
    width = len(records[0][1])
    empty_first = bool(header) and width > 1 and not records[0][1][0].strip()
    # R's write.table names no column over the row names: a header of one
    # cell fewer than the rows (read.table's rule), whose first cells are
    # then names or the rows' numbers (checked below). A row that only ends
    # with a delimiter is no such row.
    unnamed_first = (
        bool(header)
        and len(records) > 1
        and len(records[1][1]) == width + 1
        and bool(records[1][1][-1].strip())
    )
    if header:
        columns = [name.strip() or str(j + 1) for j, name in enumerate(records[0][1])]
        if unnamed_first:
            columns.insert(0, ROW_NAMES)
            width += 1
        if empty_first:
            # Row names, or data named below (pandas' header is ",0,1,2").
            columns[0] = ROW_NAMES
        duplicated = sorted({name for name in columns if columns.count(name) > 1})
        if duplicated:
            raise InputError(
                f"{path} names column {duplicated[0]!r} more than once; give "
                "every column its own name."
            )
        records = records[1:]
        if not records:
            raise InputError(f"{path} has a header but no data rows.")
    else:
        columns = [str(j + 1) for j in range(width)]
    if detected and delimiter != ",":
        _check_thousands(path, records, columns, decimal)
    lines = np.array([record[0] for record in records], dtype=int)
    numbers, texts = [None] * width, [None] * width
    # Most rows are all numbers: one match over the row, then ``float``.
    cell = rf"\s*(?:{number.pattern})\s*"
    all_numbers = re.compile(rf"{cell}(?:\x00{cell})*")
    rows = []
    for line, cells, _ in records:
        if len(cells) != width:
            if unnamed_first and len(cells) == width - 1 and line == lines[1]:
                # The second row is as the header: the first, one longer,
                # is the odd one.
                raise _short_header_error(path, lines[0], width)
            cells = _fitted_to(path, line, cells, width, header, unnamed_first)
        joined = "\x00".join(cells)
        if all_numbers.fullmatch(joined):
            plain = joined.replace(",", ".").split("\x00") if decimal == "," else cells
            row = list(map(float, plain))
            if _INFINITY not in row and -_INFINITY not in row:
                rows.append(row)
                if None in numbers:
                    for j, found in enumerate(numbers):
                        numbers[j] = found or (line, cells[j].strip())
                continue
        rows.append(_read_cells(cells, line, number, numbers, texts))
    values = np.array(rows, dtype=float).reshape(len(rows), width)
    # R quotes its row names ("1","3",... also after na.omit), not numbers.
    quoted = text.splitlines()[lines[0] - 1].lstrip(" \t\ufeff").startswith('"')
    row_names = (unnamed_first or empty_first) and _holds_row_names(
        values[:, 0], numbers[0], texts[0], quoted, empty_first
    )
    if unnamed_first and not row_names:
        # Not R's row names (text or the rows' numbers).
        raise _short_header_error(path, lines[0], width)
    if empty_first and not row_names:
        columns[0] = "1" if "1" not in columns else "(unnamed)"
    return Table(
        str(path),
        columns,
        values,
        lines,
        numbers,
        texts,
        delimiter,
        decimal,
        encoding,
        header,
        ignored,
        row_names,
        n_comments,
    )


def _holds_row_names(first, number, text, quoted, empty_cell):
    """Whether a first column under an empty header cell (or none) holds row names.

    Text (R's names of rows), the rows' numbers counted from 0 or 1
    (pandas' index, R's default names), or distinct whole numbers from 0
    up: the numbers of the rows a filter, a sort or a shuffle kept, under
    an ``empty_cell`` of the header (``df.dropna().to_csv()`` writes 0, 1,
    3, ...: review 17 found such an index fitted as a column) or
    ``quoted`` as R quotes names (``na.omit``: "1","3","4",...). Under a
    header one cell short, unquoted whole numbers may be decimal commas in
    a comma file (``72,5``): not names. A column of other numbers
    (fractions, repeated or negative values) is data.
    """
    if text is not None:
        return number is None
    start = first[0] if first.size else np.nan
    if start in (0.0, 1.0) and np.array_equal(first, start + np.arange(first.size)):
        return True
    return (quoted or empty_cell) and _distinct_whole_numbers(first)


def _distinct_whole_numbers(values):
    """Whether ``values`` are whole numbers from 0 up, no two the same."""
    return bool(
        values.size > 0
        and np.all(values >= 0)
        and np.all(values == np.floor(values))
        and np.unique(values).size == values.size
    )


def _names_columns(path, text, records, number, delimiter):
    """Whether a first row that holds text is a header (or an error).

    A header names some column of numbers with text. A first row whose
    text cells all sit over columns of text (labels, R's row names) and
    whose other cells are numbers may be a row of data or names of numbers
    (years) over a column of labels. R quotes every name, numbers too, and
    no number of a row of data: numbers quoted over unquoted ones make it a
    header. Quoted text beside unquoted numbers that are not all whole
    (R's ``write.table(..., col.names=FALSE)``) makes it a row of data;
    whole numbers there may be names written unquoted (Python's
    ``QUOTE_NONNUMERIC`` writes a header ``"label",2019,2020``). Otherwise
    the file does not say, and guessing would drop a row or fit one,
    silently: an error.
    """
    line, first = records[0][0], [cell.strip() for cell in records[0][1]]
    below = records[1 : _SAMPLE_ROWS + 1]

    def numeric_below(j):
        return any(
            j < len(cells) and number.fullmatch(cells[j].strip())
            for _, cells, _ in below
        )

    is_number = [bool(number.fullmatch(cell)) for cell in first]
    texts = [
        j
        for j, cell in enumerate(first)
        if not is_number[j] and cell.lower() not in MISSING_CELLS
    ]
    if not any(is_number) or any(numeric_below(j) for j in texts):
        return True
    if _quoted_names(text, records, number, delimiter):
        return True
    quoted = _record_quotes(text, records[0], delimiter)
    numbers = [j for j in range(len(first)) if is_number[j]]
    if (
        quoted is not None
        and all(quoted[j] for j in texts)
        and not any(quoted[j] for j in numbers)
        and not all(float(first[j].replace(",", ".")).is_integer() for j in numbers)
    ):
        return False
    shown = ",".join(first[:4]) + (",..." if len(first) > 4 else "")
    raise InputError(
        f"{path}, line {line}: the first row ({shown}) may name the columns or "
        "be the first row of data: its text sits over columns of text and its "
        "other cells are numbers. Pass --header if it names the columns, "
        "--no-header if it is data."
    )


def _quoted_names(text, records, number, delimiter):
    """Whether the first row's numbers are quoted over unquoted numbers.

    R quotes the names of columns, numbers too (``"","2019","2020"``), and
    no number in its rows; a file that quotes every cell says nothing.
    """
    if len(records) < 2:
        return False
    first, second = records[0][1], records[1][1]
    quoted = _record_quotes(text, records[0], delimiter)
    quoted_below = _record_quotes(text, records[1], delimiter)
    if quoted is None or quoted_below is None or len(first) != len(second):
        return False
    return any(
        quoted[j]
        and number.fullmatch(first[j].strip())
        and not quoted_below[j]
        and number.fullmatch(second[j].strip())
        for j in range(len(first))
    )


def _record_quotes(text, record, delimiter):
    """Whether each cell of a record, as written, starts with a quote.

    None where the written lines do not split into the record's cells (a
    quote inside an unquoted cell, say): the quoting then says nothing.
    """
    first_line, cells, last_line = record
    lines = _LINE_BREAK.split(text)[first_line - 1 : last_line]
    separator = " " if delimiter == WHITESPACE else delimiter
    quoted, inside, starting = [], False, True
    for char in "\n".join(lines):
        if starting:
            if char in " \t" and char != separator:
                continue
            quoted.append(char == '"')
            starting = False
        if char == '"':
            inside = not inside
        elif char == separator and not inside:
            starting = True
    if starting:
        quoted.append(False)
    return quoted if len(quoted) == len(cells) else None


def _counted_header(cells):
    """Whether a first row is pandas' header of unnamed columns: ``,0,1,2``.

    Its first cell (the index's) is empty and the others count from 0 or 1;
    otherwise a row of numbers is data.
    """
    names = [cell.strip() for cell in cells]
    if len(names) < 2 or names[0] or not all(name.isdigit() for name in names[1:]):
        return False
    counts = [int(name) for name in names[1:]]
    start = counts[0]
    return start in (0, 1) and counts == list(range(start, start + len(counts)))


def _read_cells(cells, line, number, numbers, texts):
    """A row's values, noting each column's first number and first text."""
    row = []
    for j, cell in enumerate(cells):
        cell = cell.strip()
        value = _NAN
        if cell.lower() not in MISSING_CELLS:
            if number.fullmatch(cell):
                value = float(cell.replace(",", "."))
            if math.isfinite(value):
                if numbers[j] is None:
                    numbers[j] = (line, cell)
            else:
                value = _NAN
                if texts[j] is None:
                    texts[j] = (line, cell)
        row.append(value)
    return row


def _decode(path, encoding):
    """The file's text, and the encoding it was read with."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise InputError(f"No such file: {path}.") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a CSV file.") from None
    except OSError as error:
        raise InputError(f"Cannot read {path}: {error.strerror}.") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif encoding is None:
        encoding = "utf-8-sig"
    else:
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise InputError(
                f"--encoding {encoding!r} is not an encoding Python knows "
                "(such as utf-8, cp1252, latin-1)."
            ) from None
        if encoding == "utf-8":
            encoding = "utf-8-sig"
    if encoding != "utf-16" and b"\0" in raw:
        raise InputError(
            f"{path} is not a text CSV file: it holds binary data (a NUL byte)."
        )
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise InputError(
            f"{path} is not a text file in {encoding.replace('-sig', '')} "
            f"(line {line} holds the byte 0x{raw[error.start]:02x}); save it as "
            "CSV UTF-8, or name its encoding, e.g. --encoding cp1252."
        ) from None
    if not text.strip():
        raise InputError(f"{path} is empty; expected a header row and data rows.")
    return text, encoding


# A comment: '#' then a blank, another '#' or nothing (a tab after '#'
# is a tab-separated cell '#'); Excel's errors (#N/A, #DIV/0!) are cells.
# Line ends as the csv module counts lines (not str.splitlines, which also
# breaks at \u2028 and others inside cells).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_COMMENT = re.compile(r"[ \t]*#(?:[ #]|\r?\n|\r|$)")


def _leading_comments(text):
    """The text with its comment lines at the top blanked.

    Each is left empty (its line ending kept, so that every line keeps its
    number). Returns the text, how many comment lines there were, and the
    last one less its '#' (NumPy's ``savetxt`` writes its header so, ``#
    a,b``), or None.
    """
    lines = text.splitlines(keepends=True)
    comments, header = [], None
    for i, line in enumerate(lines):
        if _COMMENT.match(line):
            comments.append(i)
            header = line.lstrip(" \t")[1:].strip()
        elif line.strip():
            break
    if not comments:
        return text, 0, None
    for i in comments:
        lines[i] = lines[i][len(lines[i].rstrip("\r\n")) :]
    return "".join(lines), len(comments), header or None


def _drop_footer(records):
    """Drop the blank and comment records at the end; the comments' lines.

    Comments there are NumPy's footer: a record of one cell (a line of
    prose, no delimiter) that starts as a comment, or whose first cell is
    '#' alone (the same line split by blanks); a row whose first cell
    starts with '# ' is a row. A record of several empty cells is a row
    with no value (pandas' ``,,,`` for a row of NaN), not a blank line:
    dropping it lost rows from the results (review 17).
    """

    def footer(cells):
        first = cells[0].strip() if cells else ""
        return first == "#" or (len(cells) == 1 and _COMMENT.match(cells[0]))

    dropped = 0

    def blank(cells):
        return len(cells) <= 1 and not _has_content(cells)

    while records and (blank(records[-1][1]) or footer(records[-1][1])):
        line, cells, end = records.pop()
        if _has_content(cells):
            dropped += end - line + 1
    return dropped


def _cells_of(line, delimiter):
    """The cells of one line of text."""
    delimiter = " " if delimiter == WHITESPACE else delimiter
    return next(csv.reader([line], delimiter=delimiter), [])


def _collapsed_blanks(text):
    """Runs of blanks and tabs as one blank, none at either end of a line."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        content = line.rstrip("\r\n")
        lines[i] = re.sub(r"[ \t]+", " ", content).strip(" ") + line[len(content) :]
    return "".join(lines)


def _detect_delimiter(text):
    """The candidate that splits the first rows into equally many cells.

    Splitting into several cells counts first, then how many rows agree
    with the first; a file of one column gets one that splits nothing.
    """
    sample = text[:_SAMPLE_CHARS]
    cut = len(sample) < len(text)
    best, best_score = ",", (False, 0)
    for delimiter in _DETECTION_ORDER:
        try:
            rows = [
                row
                for row in csv.reader(
                    io.StringIO(sample, newline=""), delimiter=delimiter
                )
                if _has_content(row)
            ]
        except csv.Error:
            continue
        if cut:
            rows = rows[:-1]  # maybe cut short
        rows = rows[:_SAMPLE_ROWS]
        if not rows:
            continue
        score = (len(rows[0]) > 1, sum(len(row) == len(rows[0]) for row in rows))
        if score > best_score:
            best, best_score = delimiter, score
    return best


def split_by_blanks(table):
    """Whether runs of blanks would split a file read as one column alike.

    R's write.table and NumPy's savetxt separate cells by a blank: such a
    file read as one column needs ``--delimiter whitespace``, which the
    error says (blanks are not detected: they also group thousands).
    """
    if len(table.columns) != 1:
        return False
    try:
        with open(table.path, encoding=table.encoding) as file:
            sample = file.read(_SAMPLE_CHARS)
    except (OSError, UnicodeDecodeError):
        return False
    sample, _, _ = _leading_comments(sample)
    lines = [line for line in sample.splitlines() if line.strip()][:_SAMPLE_ROWS]
    if all(_GROUPED.fullmatch(line.strip()) for line in lines[1:]):
        return False  # thousands grouped by a blank, 1 250,5: no columns
    widths = {len(line.split()) for line in lines[1:]}
    return len(lines) > 1 and len(widths) == 1 and min(widths) > 1


_GROUPED = re.compile(r"[+-]?\d{1,3}(?: \d{3})+(?:[.,]\d*)?")


def _records(path, text, delimiter):
    """Each record as (its first line, its cells, its last line); the lines."""
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=" " if delimiter == WHITESPACE else delimiter,
    )
    records, line = [], 1
    try:
        for cells in reader:
            records.append((line, cells, reader.line_num))
            line = reader.line_num + 1
    except csv.Error as error:
        raise InputError(f"{path}, line {reader.line_num}: {error}.") from None
    return records, reader.line_num


def _has_content(cells):
    return any(cell.strip() for cell in cells)


def _detect_decimal(records, delimiter):
    """',' when the file is not comma-separated and writes a decimal comma."""
    if delimiter == ",":
        return "."
    number = _NUMBER[","]
    for _, cells, _ in records:
        for cell in cells:
            if "," in cell and number.fullmatch(cell.strip()):
                return ","
    return "."


# A number whose only mark has 1 to 3 digits before it (no leading zero)
# and 3 after: 1.161 or 1161? (1,500 or 1.5?)
_MARKED_THOUSANDS = {
    mark: re.compile(rf"[+-]?[1-9]\d{{0,2}}{re.escape(mark)}\d{{3}}") for mark in ".,"
}


def _check_thousands(path, records, columns, decimal):
    """Raise where a column reads as thousands separators, not decimals.

    A file that is not comma-separated may group thousands with the mark
    the reading takes for decimals (a German export ``1.161;73``, a tab
    file ``986,772``): such numbers were read 1000 times too small, beside
    unmarked ones (``335``) in their own units. A column whose every
    number with the mark reads so (``_MARKED_THOUSANDS``) is an error
    where it also holds whole numbers without the mark, or where no number
    of the file shows the mark as a decimal one (``0.2``, ``5.15``):
    NumPy's ``savetxt(fmt="%.3f")`` writes every number with three
    decimals, and its columns of numbers from 1 to 999 are read as they
    are where another column shows the mark. Thousands separators are not
    read; ``--decimal`` says the marks are decimals.
    """
    grouped, number = _MARKED_THOUSANDS[decimal], _NUMBER[decimal]
    whole = re.compile(r"[+-]?\d+")
    by_column = [
        [cells[j].strip() for _, cells, _ in records[:1000] if j < len(cells)]
        for j in range(len(columns))
    ]
    marked = [[cell for cell in cells if decimal in cell] for cells in by_column]
    shown_decimal = any(
        number.fullmatch(cell) and not grouped.fullmatch(cell)
        for cells in marked
        for cell in cells
    )
    for name, cells, with_mark in zip(columns, by_column, marked, strict=True):
        if not with_mark or not all(grouped.fullmatch(cell) for cell in with_mark):
            continue
        if not shown_decimal or any(whole.fullmatch(cell) for cell in cells):
            point = "point" if decimal == "." else "comma"
            raise InputError(
                f"{path}: every number with a decimal {point} in column "
                f"{name!r} has three digits after it ({with_mark[0]!r}): "
                "thousands separators, which are not read, or decimals? "
                "Remove the thousands separators, or pass --decimal "
                f"{decimal!r} if they are decimals."
            )


def _short_header_error(path, line, width):
    """The error of a first row one cell longer than the header, not R's."""
    return InputError(
        f"{path}, line {line}: {width} cells where the header has {width - 1}; "
        "every row needs one cell per column (check the delimiter: --delimiter)."
    )


def _fitted_to(path, line, cells, width, header, named_rows=False):
    """A row's cells as ``width`` cells, or the error that says why not.

    ``named_rows``: the rows start with row names, which the header does
    not name (R's write.table).
    """
    if not cells:
        return [""] * width  # a blank line: a row with no value
    if len(cells) > width and not _has_content(cells[width:]):
        return cells[:width]  # empty cells after the last column
    plural = "" if len(cells) == 1 else "s"
    first = "the header" if header else "the first row"
    if named_rows:
        first = "the rows (row names first) under the header"
    hint = "check the delimiter: --delimiter"
    if any("\n" in cell or "\r" in cell for cell in cells):
        hint = "a quote opened there is not closed where the cell should end"
    have = "have" if named_rows else "has"
    raise InputError(
        f"{path}, line {line}: {len(cells)} cell{plural} where {first} {have} "
        f"{width}; every row needs one cell per column ({hint})."
    )


def feature_columns(table, names=None, exclude=(), chosen_by="--columns"):
    """The chosen columns as an array, their names, and the columns skipped.

    ``names`` (default: every column not in ``exclude`` that holds numbers,
    less a column of row names) must be numeric. A column of numbers and
    text is an error naming its first text cell unless the user left it
    out. ``chosen_by`` is the option that chooses columns (None where there
    is none). Returns ``(X, names, skipped)`` with ``skipped`` a dict from
    column name to 'text', 'empty', 'row-name' or 'row-number' (a column
    named as an identifier that holds distinct whole numbers, one per row:
    :func:`identifies_the_rows`).
    """
    leave_out = chosen_by and f"leave the column out with {chosen_by}"
    choose = chosen_by and f"choose numeric columns with {chosen_by}"
    skipped = {}
    if names is None:
        names = []
        for j, name in enumerate(table.columns):
            kind = table.kind(j)
            if name in exclude:
                continue
            if kind in ("text", "empty"):
                skipped[name] = kind
                continue
            if j == 0 and table.row_names:
                skipped[name] = "row-name"
                continue
            if (
                kind == "numeric"
                and _IDENTIFIER.fullmatch(name)
                and identifies_the_rows(table.values[:, j])
            ):
                skipped[name] = "row-number"
                continue
            table.check_numeric(j, leave_out)
            names.append(name)
        if not names:
            counters = [name for name, kind in skipped.items() if kind == "row-number"]
            hint = "check --delimiter and --decimal"
            if split_by_blanks(table):
                hint = (
                    "its cells look separated by blanks, as R's write.table and "
                    "NumPy's savetxt write them: pass --delimiter whitespace"
                )
            elif counters and chosen_by:
                hint = (
                    f"column {counters[0]!r} numbers the rows (distinct whole "
                    f"numbers); to fit it anyway, name it with {chosen_by}"
                )
            raise InputError(
                f"{table.path} has no numeric column to fit (read as "
                f"{table.description()}); {hint}."
            )
    indices = [table.column(name) for name in names]
    for j in indices:
        table.check_numeric(j, choose)
    return table.values[:, indices], list(names), skipped


# The names of identifiers: id, ID, index, row, obs, #, ... and user_id,
# user.id, userId.
_IDENTIFIER = re.compile(
    r"(?i:id|ident|identifier|index|idx|row|rownum|row[ ._]?(?:id|no|number)|obs"
    r"|observation|record|case|#|no\.?)|.*(?:[ _.-](?i:id)|[a-z](?:Id|ID))"
)


def identifies_the_rows(values):
    """Whether a column names each row by a number: distinct whole numbers.

    Under an identifier's name (:data:`_IDENTIFIER`) such a column is left
    out unless chosen: in the file's order (``id`` = 1000, 1001, ...)
    clusters fitted on it follow that order, in another (a shuffled or
    sorted export, review 17) it adds a feature that measures nothing.
    """
    return values.size >= 3 and _distinct_whole_numbers(values - np.min(values))


def numbers_the_rows(values):
    """Whether a column counts the rows: consecutive integers, one per row.

    An identifier (``id`` = 1000, 1001, ...), which a database export or a
    spreadsheet's first column often is, gives clusters that follow the
    file's order, not the data: under another name than an identifier's
    (a year in a yearly series) the first line of output points at it
    (an identifier's is left out: :func:`identifies_the_rows`).
    """
    start = values[0] if values.size else np.nan
    return (
        values.size >= 3
        and start == np.floor(start)
        and np.array_equal(values, start + np.arange(values.size))
    )


def weight_column(table, name, rows_with_value):
    """The sample weights in a named column.

    Every row with a value needs a number; a row with no value (a blank
    line) gets weight 0, as it takes no part in the fit.
    """
    j = table.column(name)
    table.check_numeric(j)
    weights = table.values[:, j].copy()
    absent = np.isnan(weights) & rows_with_value
    if absent.any():
        raise InputError(
            f"{table.path}, line {table.lines[np.argmax(absent)]}: the weight "
            f"column {name!r} is empty; every row with a value needs a weight."
        )
    negative = weights < 0
    if negative.any():
        i = np.argmax(negative)
        raise InputError(
            f"{table.path}, line {table.lines[i]}: the weight {weights[i]:g} in "
            f"column {name!r} is negative; weights are repeat counts, >= 0."
        )
    return np.where(rows_with_value, weights, 0.0)
