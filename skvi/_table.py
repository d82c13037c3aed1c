"""Reading the command line's CSV files into numeric arrays.

A small reader on the standard library's ``csv`` module, so the command
line needs nothing beyond the core dependencies: a header row, then data
rows with as many cells; empty cells (and NA, NaN, null, ?) are missing
values. Every problem is a :class:`InputError` whose message names the file
and, where it can, the line or column.
"""

import csv
from dataclasses import dataclass

import numpy as np

MISSING_CELLS = {"", "na", "nan", "null", "none", "?"}


class InputError(ValueError):
    """An input file or option the command line cannot use."""


@dataclass
class Table:
    """The cells of a CSV file, column by column.

    Attributes
    ----------
    path : str
    columns : list of str
        The header.
    values : ndarray of shape (n_rows, n_columns)
        Cells as floats, NaN where missing or not a number.
    numeric : list of bool
        Whether each column's present cells are all numbers.
    examples : list of str or None
        A cell of each non-numeric column that is not a number.
    """

    path: str
    columns: list
    values: np.ndarray
    numeric: list
    examples: list

    def column(self, name):
        """The index of a named column, or an error listing the names."""
        if name not in self.columns:
            raise InputError(
                f"{self.path} has no column {name!r}; its columns are "
                f"{', '.join(self.columns)}."
            )
        return self.columns.index(name)


def read_table(path):
    """Read a CSV file with a header row.

    Parameters
    ----------
    path : str

    Returns
    -------
    Table
    """
    try:
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
    except FileNotFoundError:
        raise InputError(f"No such file: {path}.") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a CSV file.") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text (UTF-8) CSV file.") from None
    except (OSError, csv.Error) as error:
        raise InputError(f"Cannot read {path}: {error}.") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"{path} is empty; expected a header row and data rows.")
    header = [name.strip() for name in rows[0]]
    if len(rows) == 1:
        raise InputError(f"{path} has a header but no data rows.")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise InputError(f"{path} names column {duplicated[0]!r} more than once.")
    width = len(header)
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise InputError(
                f"{path}, data row {number - 1}: {len(row)} cells where the "
                f"header has {width}; every row needs one cell per column."
            )
    values = np.full((len(rows) - 1, width), np.nan)
    numeric, examples = [True] * width, [None] * width
    for i, row in enumerate(rows[1:]):
        for j, cell in enumerate(row):
            text = cell.strip()
            if text.lower() in MISSING_CELLS:
                continue
            try:
                values[i, j] = float(text)
            except ValueError:
                if numeric[j]:
                    numeric[j], examples[j] = False, text
    if not np.all(np.isfinite(values[~np.isnan(values)])):
        raise InputError(f"{path} contains an infinite value; use finite numbers.")
    return Table(str(path), header, values, numeric, examples)


def feature_columns(table, names=None, exclude=()):
    """The rows of the chosen numeric columns, and their names.

    ``names`` (default: every numeric column not in ``exclude``) must all
    be numeric.
    """
    if names is None:
        names = [
            name
            for name, numeric in zip(table.columns, table.numeric, strict=True)
            if numeric and name not in exclude
        ]
        if not names:
            raise InputError(
                f"{table.path} has no numeric column to fit; pass --columns."
            )
    indices = [table.column(name) for name in names]
    for name, j in zip(names, indices, strict=True):
        if not table.numeric[j]:
            raise InputError(
                f"Column {name!r} of {table.path} is not numeric (it holds "
                f"{table.examples[j]!r}); choose numeric columns with --columns."
            )
    return table.values[:, indices], list(names)


def weight_column(table, name):
    """The sample weights in a named column: numbers, none missing."""
    j = table.column(name)
    weights = table.values[:, j]
    if not table.numeric[j] or np.isnan(weights).any():
        raise InputError(
            f"Weight column {name!r} of {table.path} must hold a number in every row."
        )
    return weights
