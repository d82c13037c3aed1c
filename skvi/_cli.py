"""The command line: ``skvi fit``, ``skvi predict`` and ``skvi demo``.

Every error a user can cause (a missing or malformed file, a bad cell, an
unknown column, a bad option, a model file skvi did not write) ends the
command with one line on stderr and exit status 1 (2 for a malformed
command line), never a traceback. Options are checked before any file is
read, and the data before any fit starts.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import warnings

import numpy as np

from ._table import (
    DELIMITER_NAMES,
    WHITESPACE,
    InputError,
    feature_columns,
    numbers_the_rows,
    read_table,
    weight_column,
)

SKVI_CLASSES = {
    "skvi._em.EMGaussianMixture",
    "skvi._variational.VariationalGaussianMixture",
}

# The most fits one 'skvi fit' runs (components x covariance types): a
# range such as 1-100000000 is a typing slip, not a plan.
MAX_FITS = 1000

READING_RULES = """reading the CSV file:
  Delimiter: comma, semicolon or tab, detected from the first lines
  (--delimiter to choose; --delimiter whitespace for runs of blanks and
  tabs, as R's write.table and NumPy's savetxt write). Lines at the top or
  the end starting with '# ' are comments (the last at the top may be
  NumPy's '# a,b,c' header). Header: the first row names the columns unless
  it holds only numbers; then it is data and the columns are named 1, 2, ...
  (--header / --no-header to choose); a first row of labels and numbers
  that could be either is an error asking for one of them. A first column
  with an empty header cell that holds text or the rows' numbers holds row
  names (as R's write.csv and pandas' to_csv write them) and is skipped, as
  is such a first column where the header has one cell fewer (R's
  write.table). A column named as an identifier (id, index, user_id) that
  holds consecutive integers, one per row, is skipped. Decimal separator:
  a point, or a comma in a semicolon- or tab-separated file that writes
  numbers so (--decimal to choose); thousands separators are not read.
  Encoding: UTF-8 with or without a byte-order mark, UTF-16 with one (--encoding for
  others). Empty cells and NA, NaN, N/A, #N/A, null, none, ? are missing
  values. A cell that is not a number in a column of numbers is an error
  naming its line; columns of text are skipped unless chosen. A blank row
  between data rows, or a row of empty cells (,,,) anywhere after the
  header, is a row with no value: it keeps its place in the output and
  takes no part in the fit; blank lines at the end are ignored.
  The first line of output says how the file was read.
"""

FIT_EXAMPLES = f"""examples:
  skvi fit data.csv --n-components 3
  skvi fit data.csv --method vi --n-components 10 --covariance-type diag
  skvi fit data.csv --n-components 1-9 --covariance-type all --plot
  skvi fit data.csv --columns x,y --weight-column count --save model.skops

A range of --n-components (1-9, or a list 2,4,8) or several covariance
types (all, or full,diag, or VEV,VVV) fits every combination (at most
{MAX_FITS} fits) and keeps the best: by BIC for EM, by the ELBO for VI.
Writes labels.csv (one line per data row of the file) and summary.json
(and with --plot fit.png, selection.png) to --output-dir.

{READING_RULES}"""

PREDICT_EXAMPLES = f"""examples:
  skvi predict model.skops new.csv
  skvi predict model.skops new.csv --output-dir results

Writes predictions.csv: each row's label, component probabilities and log
density, from the columns the model was fitted on (by name; by position in
a file without a header row, or for a model fitted on an array, which has
no names: then it says so). The file is read as 'skvi fit' reads it.

{READING_RULES}"""

DEMO_EXAMPLES = """examples:
  skvi demo
  skvi demo --n-components 3 --output faithful.png
  skvi demo --no-plot
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    """The parser of every command."""
    parser = _Parser(
        prog="skvi",
        description="Gaussian mixtures by EM and variational inference.",
        epilog="Run 'skvi COMMAND --help' for a command's options and examples.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    formatter = argparse.RawDescriptionHelpFormatter

    fit = commands.add_parser(
        "fit",
        help="fit a mixture to a CSV file (or choose among many)",
        epilog=FIT_EXAMPLES,
        formatter_class=formatter,
    )
    fit.add_argument("data", help="CSV file (see 'reading the CSV file' below)")
    fit.add_argument(
        "--method",
        choices=("em", "vi"),
        default="em",
        help="em: maximum likelihood (EMGaussianMixture); vi: variational "
        "Bayes (VariationalGaussianMixture), which empties the components the "
        "data do not need (default em)",
    )
    fit.add_argument(
        "--n-components",
        default="2",
        help="a number, a range such as 1-9, or a list such as 2,4,8 (default 2)",
    )
    fit.add_argument(
        "--covariance-type",
        default="full",
        help="full, tied, diag, spherical or one of mclust's fourteen models "
        "(EII, VII, EEI, VEI, EVI, VVI, EEE, VEE, EVE, VVE, EEV, VEV, EVV, "
        "VVV; em only), a list of them, or all: the fourteen for em, as R's "
        "Mclust, the four conjugate types for vi (default full)",
    )
    fit.add_argument(
        "--columns", help="comma-separated columns to fit (default: all numeric)"
    )
    fit.add_argument("--weight-column", help="column of sample weights")
    fit.add_argument(
        "--max-iter",
        type=_count,
        default=None,
        help=f"the most iterations per fit (default {_estimator_defaults('max_iter')})",
    )
    fit.add_argument(
        "--tol",
        type=_tolerance,
        default=None,
        help="stop when the per-sample gain of the bound still to come is below "
        f"this (default {_estimator_defaults('tol')})",
    )
    fit.add_argument(
        "--random-state",
        type=_seed,
        default=0,
        help="seed of the random start, so that a run can be repeated (default 0)",
    )
    fit.add_argument(
        "--standardize",
        action="store_true",
        help="scale every column to mean 0 and variance 1 before fitting; the "
        "saved model applies the same scaling to new rows",
    )
    fit.add_argument(
        "--n-jobs", type=_jobs, default=None, help="parallel fits (-1: all cores)"
    )
    fit.add_argument("--output-dir", default=".", help="where to write the results")
    fit.add_argument("--plot", action="store_true", help="also draw PNG figures")
    fit.add_argument(
        "--plot-columns",
        help="the two columns to draw (default: the two that best separate the "
        "components)",
    )
    fit.add_argument("--save", metavar="MODEL.skops", help="save the fitted model")
    fit.add_argument(
        "--verbose", action="store_true", help="print the bound at every iteration"
    )
    _add_reading_options(fit)

    predict = commands.add_parser(
        "predict",
        help="labels, probabilities and densities of new rows",
        epilog=PREDICT_EXAMPLES,
        formatter_class=formatter,
    )
    predict.add_argument("model", help="a model saved by 'skvi fit --save'")
    predict.add_argument("data", help="CSV file with the model's columns")
    predict.add_argument(
        "--output-dir", default=".", help="where to write predictions.csv"
    )
    _add_reading_options(predict)

    demo = commands.add_parser(
        "demo",
        help="fit the Old Faithful data and show the ELBO at work",
        epilog=DEMO_EXAMPLES,
        formatter_class=formatter,
    )
    demo.add_argument("--output", default="skvi_demo.png", help="PNG for the figure")
    demo.add_argument("--no-plot", action="store_true", help="print the report only")
    demo.add_argument(
        "--n-components", type=int, default=2, help="components to fit (default 2)"
    )
    demo.add_argument(
        "--random-state", type=_seed, default=0, help="seed of the start (default 0)"
    )
    return parser


def _estimator_defaults(name):
    """A parameter's defaults, e.g. '1000 for em, 100 for vi', or '100'.

    Those of :func:`select_model`'s fits, which every fit here is.
    """
    from ._em import EMGaussianMixture
    from ._selection import SELECTION_DEFAULTS
    from ._variational import VariationalGaussianMixture

    em = SELECTION_DEFAULTS["em"].get(name, EMGaussianMixture().get_params()[name])
    vi = SELECTION_DEFAULTS["vi"].get(
        name, VariationalGaussianMixture().get_params()[name]
    )
    return f"{em}" if em == vi else f"{em} for em, {vi} for vi"


# The options' types: a bad value is a one-line usage error before any work.
def _count(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give a count >= 0")
    return value


def _tolerance(text):
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def _seed(text):
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text} is not a seed in [0, 2**32 - 1]")
    return value


def _jobs(text):
    value = int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 jobs; give a positive count or -1")
    return value


_count.__name__ = _seed.__name__ = _jobs.__name__ = "int"
_tolerance.__name__ = "float"


def _add_reading_options(parser):
    group = parser.add_argument_group("reading options (default: detected)")
    group.add_argument(
        "--delimiter",
        help="the character between cells: ',', ';', tab, any one character, "
        "or whitespace (runs of blanks and tabs, as R's write.table and NumPy's "
        "savetxt separate cells)",
    )
    group.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the first row names the columns",
    )
    group.add_argument(
        "--decimal", choices=(".", ","), help="the decimal separator of the numbers"
    )
    group.add_argument("--encoding", help="the file's text encoding, e.g. cp1252")


def main(argv=None):
    """Run a command; returns the exit status."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        # A warning is one line too, not a source line with a path.
        warnings.showwarning = _warning_line(args.command)
        return _run(args)


def _warning_line(command):
    def show(message, category, *_, **__):
        print(f"skvi {command}: warning: {_one_line(message)}", file=sys.stderr)

    return show


def _run(args):
    try:
        if args.command == "fit":
            run_fit(args)
        elif args.command == "predict":
            run_predict(args)
        else:
            from ._demo import run_demo

            if args.n_components < 1:
                raise InputError("--n-components must be at least 1.")
            if not args.no_plot:
                _check_existing_directory(os.path.dirname(os.path.abspath(args.output)))
            run_demo(
                output=args.output,
                plot=not args.no_plot,
                n_components=args.n_components,
                random_state=args.random_state,
            )
    except BrokenPipeError:
        # The reader went away (``skvi demo | head``): nothing to report.
        sys.stderr.close()
        return 0
    except (ValueError, OSError, ImportError) as error:
        print(f"skvi {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(
            f"skvi {args.command}: error: out of memory; use fewer rows, "
            "components or fits.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"skvi {args.command}: interrupted.", file=sys.stderr)
        return 130
    return 0


def console_main():
    """The ``skvi`` console script."""
    sys.exit(main())


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


# ------------------------------------------------------------------ fit
def parse_counts(text):
    """``3``, ``1-9`` or ``2,4,8`` as a list of positive integers.

    At most :data:`MAX_FITS` of them, checked before any list is built.
    """
    ranges = []
    try:
        for part in text.split(","):
            low, dash, high = part.partition("-")
            low = int(low)
            high = int(high) if dash else low
            if low > high:
                raise ValueError
            ranges.append((low, high))
    except ValueError:
        raise InputError(
            f"--n-components {text!r} is not a number, a range such as 1-9 or "
            "a list such as 2,4,8."
        ) from None
    if min(low for low, _ in ranges) < 1:
        raise InputError(f"--n-components {text!r}: components must be >= 1.")
    size = sum(high - low + 1 for low, high in ranges)
    if size > MAX_FITS:
        raise InputError(
            f"--n-components {text!r} asks for {size} fits, more than the "
            f"{MAX_FITS} one command runs; choose a shorter range or a list "
            "such as 2,4,8,16."
        )
    counts = (k for low, high in ranges for k in range(low, high + 1))
    return list(dict.fromkeys(counts))


def run_fit(args):
    """``skvi fit``: fit (or select), then write the results."""
    from ._selection import covariance_type_list, select_model

    counts = parse_counts(args.n_components)
    try:
        kinds = covariance_type_list(args.covariance_type, args.method)
    except ValueError as error:
        raise InputError(f"--covariance-type: {error}") from None
    if len(counts) * len(kinds) > MAX_FITS:
        raise InputError(
            f"--n-components and --covariance-type ask for "
            f"{len(counts) * len(kinds)} fits, more than the {MAX_FITS} one "
            "command runs; choose fewer."
        )
    names = None if args.columns is None else _names(args.columns)
    if names is not None and args.weight_column in names:
        raise InputError(
            f"--weight-column {args.weight_column!r} is also in --columns; a "
            "column is either a feature or the weights."
        )
    if args.plot:
        from ._figures import pyplot

        pyplot()  # fail before fitting if matplotlib is missing
    if args.save:
        _skops()  # fail before fitting if skops is missing
        # Like the data path, the model path is relative to the working
        # directory, not to --output-dir.
        if os.path.isdir(args.save):
            raise InputError(f"--save {args.save} is a directory; name a file.")
        _check_writable(os.path.dirname(os.path.abspath(args.save)))
    _check_writable(args.output_dir)
    table = _read(args)
    exclude = () if args.weight_column is None else (args.weight_column,)
    X, names, skipped = feature_columns(table, names, exclude)
    with_value = ~np.isnan(X).all(axis=1)
    weights = None
    if args.weight_column is not None:
        weights = weight_column(table, args.weight_column, with_value)
    usable = int(np.count_nonzero(with_value if weights is None else weights > 0))
    if max(counts) > usable:
        rows = "rows with a value" + (" and a positive weight" * (weights is not None))
        raise InputError(
            f"--n-components {max(counts)} is more than the {usable} {rows} in "
            f"{args.data}; a mixture needs a row per component. Choose at most "
            f"{usable}."
        )
    plot_columns = _plot_columns(args.plot_columns, names) if args.plot else None
    print(reading_report(table, X, names, skipped, "left out of the fit"))
    params = {"random_state": args.random_state}
    if args.max_iter is not None:
        params["max_iter"] = args.max_iter
    if args.tol is not None:
        params["tol"] = args.tol
    selecting = len(counts) > 1 or len(kinds) > 1
    if args.verbose and not selecting:
        params.update(verbose=2, verbose_interval=1)
    # Rows with no value hold no data: the fit (and its criteria) never sees
    # them; labels.csv still has a line for each.
    fitted = X[with_value]
    fitted_weights = None if weights is None else weights[with_value]
    scaler = None
    if args.standardize:
        from sklearn.preprocessing import StandardScaler

        # Missing cells are left out of the means and variances.
        scaler = StandardScaler().fit(fitted, sample_weight=fitted_weights)
        fitted = scaler.transform(fitted)
    if len(kinds) > 1:
        _check_columns_spread(args, names, fitted, fitted_weights)
    records, model = select_model(
        fitted,
        counts,
        kinds,
        method=args.method,
        sample_weight=fitted_weights,
        n_jobs=args.n_jobs,
        as_frame=False,
        **params,
    )
    if not selecting and records[0]["error"]:
        raise InputError(records[0]["error"])
    if selecting:
        print(format_selection(records, args.method))
    column = "bic" if args.method == "em" else "elbo"
    summary = fit_summary(
        model, fitted, fitted_weights, names, args, records if selecting else None
    )
    summary["n_rows"] = int(X.shape[0])
    summary["input"] = reading_summary(table, X, skipped)
    summary["standardize"] = (
        None
        if scaler is None
        else {"mean": _plain(scaler.mean_), "scale": _plain(scaler.scale_)}
    )
    # With --standardize the saved and applied model is the pipeline.
    estimator = model if scaler is None else make_pipeline(scaler, model)
    labels = write_predictions(
        os.path.join(args.output_dir, "labels.csv"), estimator, X
    )
    with _replaced(os.path.join(args.output_dir, "summary.json")) as path:
        _write_json(path, summary)
    written = ["labels.csv", "summary.json"]
    if args.plot:
        from ._figures import fit_figure, selection_figure

        with _replaced(os.path.join(args.output_dir, "fit.png")) as path:
            plot_columns = fit_figure(
                path,
                model,
                X[with_value],
                labels[with_value],
                names,
                plot_columns,
                None if scaler is None else (scaler.mean_, scaler.scale_),
            )
        written.append(
            f"fit.png (columns {names[plot_columns[0]]}, {names[plot_columns[1]]})"
        )
        if selecting:
            with _replaced(os.path.join(args.output_dir, "selection.png")) as path:
                selection_figure(path, records, column)
            written.append("selection.png")
    if args.save:
        # The columns, by name, for 'skvi predict' to select.
        first = estimator if scaler is None else scaler
        first.feature_names_in_ = np.asarray(names, dtype=object)
        with _replaced(args.save) as path:
            _skops().dump(estimator, path)
    status = "converged" if model.converged_ else "not converged"
    if getattr(model, "_stop_reason", None) is not None:
        status = "stopped at a collapse"  # EVE, VVE; degenerate_ says why
    print(
        f"{type(model).__name__}: {_component_count(model, fitted.shape[0])}, "
        f"{model.covariance_type}, {status} after {model.n_iter_} iterations; "
        f"ELBO per sample {model.lower_bound_:.6f}"
        f"{'' if scaler is None else ' (of the standardized columns)'}."
    )
    print(f"Wrote {', '.join(written)} to {os.path.abspath(args.output_dir)}.")
    if args.save:
        print(f"Saved the model to {os.path.abspath(args.save)}.")


def _component_count(model, n_rows):
    """'3 components', or '9 components (2 hold data)'."""
    from ._figures import components_holding_data

    count = f"{model.n_components} component{'s' * (model.n_components != 1)}"
    used = int(np.count_nonzero(components_holding_data(model, n_rows)))
    if used < model.n_components:
        count += f" ({used} hold{'s' * (used == 1)} data)"
    return count


def make_pipeline(scaler, model):
    """The fitted ``StandardScaler`` and mixture as one fitted Pipeline."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("standardscaler", scaler), ("mixture", model)])


def format_selection(records, method):
    """The selection table as text, the choice marked with '*'."""
    columns = ["bic", "icl", "aic"] if method == "em" else ["elbo"]
    header = f"{'':2}{'components':>10}  {'covariance':<10}" + "".join(
        f"{name.upper():>14}" for name in columns
    )
    lines = [header]
    for row in records:
        mark = "* " if row["chosen"] else "  "
        if row["error"] is not None:
            values = f"  failed: {_one_line(row['error'])}"
        elif row["degenerate"] is not None:
            values = f"  degenerate (never chosen): {row['degenerate']}"
        else:
            values = "".join(f"{row[name]:14.3f}" for name in columns)
        lines.append(
            f"{mark}{row['n_components']:>10}  {row['covariance_type']:<10}{values}"
        )
    chosen = next(row for row in records if row["chosen"])
    rule = "lowest BIC" if method == "em" else "highest ELBO"
    lines.append(
        f"* chosen ({rule}): {chosen['n_components']} components, "
        f"{chosen['covariance_type']}"
    )
    return "\n".join(lines)


def fit_summary(model, X, weights, names, args, records):
    """What summary.json holds."""
    decomposition = model.elbo_decomposition(X, sample_weight=weights)
    summary = {
        "data": os.path.abspath(args.data),
        "columns": names,
        "n_rows": int(X.shape[0]),
        "estimator": type(model).__name__,
        "parameters": _plain(model.get_params()),
        "converged": bool(model.converged_),
        "n_iter": int(model.n_iter_),
        "lower_bound": float(model.lower_bound_),
        "lower_bounds": _plain(model.lower_bounds_),
        "elbo_decomposition": _plain(vars(decomposition)),
        "weights": _plain(model.weights_),
        "means": _plain(model.means_),
        "covariances": _plain(model.covariances_),
    }
    if args.method == "em":
        summary["bic"] = float(model.bic(X, sample_weight=weights))
        summary["aic"] = float(model.aic(X, sample_weight=weights))
    if records is not None:
        summary["selection"] = _plain(records)
    return summary


def write_predictions(path, model, X):
    """Labels, probabilities and log densities per row, as CSV; the labels."""
    with warnings.catch_warnings():
        # The command line selects the columns by name itself.
        warnings.filterwarnings("ignore", message="X does not have valid feature")
        proba = model.predict_proba(X)
        log_density = model.score_samples(X)
    labels = np.argmax(proba, axis=1)
    header = (
        ["row", "label"]
        + [f"probability_{k}" for k in range(proba.shape[1])]
        + ["log_density"]
    )
    with _replaced(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.write(",".join(header) + "\n")
        for i, (label, row, density) in enumerate(
            zip(labels, proba, log_density, strict=True)
        ):
            cells = [str(i), str(int(label))]
            cells += [f"{p:.6g}" for p in row] + [f"{density:.10g}"]
            file.write(",".join(cells) + "\n")
    return labels


# -------------------------------------------------------------- reading
def _read(args):
    """The data file, read by the reading options."""
    return read_table(
        args.data,
        delimiter=_delimiter(args.delimiter),
        header=args.header,
        decimal=args.decimal,
        encoding=args.encoding,
    )


def _delimiter(text):
    if text is None:
        return None
    named = {name: char for char, name in DELIMITER_NAMES.items()}
    text = named.get(text.lower(), "\t" if text == "\\t" else text)
    if text != WHITESPACE and (len(text) != 1 or text in '"\r\n'):
        raise InputError(
            f"--delimiter {text!r} must be one character (or comma, semicolon, "
            "tab, whitespace), not a quote or a line break."
        )
    return text


def reading_report(table, X, names, skipped, empty_rows, choosing=True):
    """One line: how the file was read and what will be used."""
    missing = int(np.count_nonzero(np.isnan(X)))
    parts = [
        f"Read {table.path} ({table.description()}): {X.shape[0]} rows, "
        f"columns {', '.join(names)}",
        f"{missing} missing cell{'' if missing == 1 else 's'}",
    ]
    lines = table.lines[np.isnan(X).all(axis=1)]
    if lines.size:
        shown = ", ".join(str(line) for line in lines[:5])
        shown += ", ..." if lines.size > 5 else ""
        s = "s" * (lines.size > 1)
        parts.append(
            f"{lines.size} row{s} with no value (line{s} {shown}), {empty_rows}"
        )
    if skipped:
        parts.append(
            "skipped "
            + ", ".join(f"{kind} column {name!r}" for name, kind in skipped.items())
        )
    if "row-number" in skipped.values():
        parts.append(
            "an identifier column numbers the rows (name it in --columns to fit it)"
        )
    # (In fit, where --columns chooses: predict reads the model's columns.)
    counting = [
        name
        for j, name in enumerate(table.columns)
        if choosing and name in names and numbers_the_rows(table.values[:, j])
    ]
    if counting:
        parts.append(
            f"column {counting[0]!r} counts the rows (consecutive integers): "
            "leave it out with --columns if it numbers them"
        )
    if table.comment_lines:
        n = table.comment_lines
        parts.append(f"skipped {n} comment line{'s' * (n > 1)} (#)")
    if table.ignored_lines:
        n = table.ignored_lines
        parts.append(f"ignored {n} blank line{'s' * (n > 1)} around the data")
    return "; ".join(parts) + "."


def reading_summary(table, X, skipped):
    """How the file was read, for summary.json."""
    return {
        "delimiter": table.delimiter,
        "decimal": table.decimal,
        "header": table.header,
        "encoding": table.encoding.replace("-sig", ""),
        "file_columns": table.columns,
        "skipped_columns": skipped,
        "missing_cells": int(np.count_nonzero(np.isnan(X))),
        "lines_with_no_value": table.lines[np.isnan(X).all(axis=1)].tolist(),
        "ignored_lines": table.ignored_lines,
        "comment_lines": table.comment_lines,
    }


def _check_columns_spread(args, names, fitted, weights):
    """As select_model's check, in the file's names and options."""
    from ._selection import METHODS, narrow_columns

    reg_covar = METHODS[args.method]().reg_covar
    found = narrow_columns(fitted, weights, reg_covar, names, args.data)
    if found is not None:
        message, constant = found
        fix = "" if constant else "pass --standardize, or "
        raise InputError(f"{message}; {fix}leave it out with --columns.")


# -------------------------------------------------------------- predict
def run_predict(args):
    """``skvi predict``: apply a saved model to new rows."""
    model = load_model(args.model)
    _check_writable(args.output_dir)
    table = _read(args)
    X, names, skipped = model_columns(table, model)
    print(
        reading_report(
            table,
            X,
            names,
            skipped,
            "given the mixture weights as probabilities",
            choosing=False,
        )
    )
    if table.header and getattr(model, "feature_names_in_", None) is None:
        # Fitted on an array: nothing says which column is which feature.
        print(
            f"The model has no column names (it was fitted on an array): "
            f"{', '.join(names)} are its features 1 to {len(names)}, in the "
            "file's order. Fit it on a data frame, or with skvi fit, to match "
            "the columns by name."
        )
    path = os.path.join(args.output_dir, "predictions.csv")
    write_predictions(path, model, X)  # a mixture or a standardizing Pipeline
    print(f"Wrote predictions for {X.shape[0]} rows to {os.path.abspath(path)}.")


def model_columns(table, model):
    """The columns of ``table`` that ``model`` was fitted on, and their names.

    By name when the model knows its columns' names and the file has them;
    by position when the file has no header row and as many columns.
    """
    n_features = model.n_features_in_
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        names = [str(name) for name in names]
        if table.row_names and "1" in names and "1" not in table.columns:
            # Before row names were read as such, an empty first header
            # cell named its column '1', and fit used it as data.
            raise InputError(
                f"The model was fitted on a column '1', but {table.path}'s "
                "first column, under an empty header cell, holds row names, "
                "which skvi fit now leaves out: the model was likely fitted on the "
                "row numbers of a file saved so. Fit it again."
            )
        if table.header or all(name in table.columns for name in names):
            return feature_columns(table, names, chosen_by=None)
    if names is None and table.header:
        X, found, skipped = feature_columns(table, chosen_by=None)
        if X.shape[1] != n_features:
            raise InputError(
                f"{table.path} has {X.shape[1]} numeric columns, but the model was "
                f"fitted on {n_features}; keep only those columns."
            )
        return X, found, skipped
    if len(table.columns) != n_features:
        fitted = f" ({', '.join(names)})" if names is not None else ""
        raise InputError(
            f"{table.path} has no header row and {len(table.columns)} columns, "
            f"but the model was fitted on {n_features}{fitted}; give the file "
            "those columns, or a header row that names them."
        )
    return feature_columns(table, table.columns, chosen_by=None)


def load_model(path):
    """A fitted model saved by ``skvi fit --save``, trusting only skvi's classes.

    A mixture, or (saved with ``--standardize``) a Pipeline of a fitted
    StandardScaler and a mixture; skops trusts those two scikit-learn types
    itself.
    """
    sio = _skops()
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise InputError(f"No model file {path}: it {what}.")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception:  # skops raises several types for a non-skops file
        raise InputError(f"{path} is not a model saved by skvi (skops).") from None
    foreign = sorted(set(untrusted) - SKVI_CLASSES)
    if foreign or not untrusted:
        raise InputError(
            f"{path} is not a skvi model: it holds {', '.join(foreign) or 'none'} "
            "rather than a skvi estimator."
        )
    try:
        model = sio.load(path, trusted=untrusted)
    except Exception:  # a damaged file fails in many ways inside skops
        raise InputError(f"{path} is damaged: skops cannot load it.") from None
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from ._em import EMGaussianMixture
    from ._variational import VariationalGaussianMixture

    skvi_classes = EMGaussianMixture | VariationalGaussianMixture
    # 'skvi fit --standardize' saves Pipeline(StandardScaler, mixture).
    mixture = model
    if isinstance(model, Pipeline):
        steps = [step for _, step in model.steps]
        if not (
            len(steps) == 2
            and type(steps[0]) is StandardScaler
            and hasattr(steps[0], "scale_")
        ):
            raise InputError(
                f"{path} holds a Pipeline that 'skvi fit --save' did not write; "
                "skvi reads a mixture, or a StandardScaler and a mixture."
            )
        mixture = steps[1]
    if not isinstance(mixture, skvi_classes):
        raise InputError(
            f"{path} holds a {type(mixture).__name__}, not a skvi estimator; save "
            "one with 'skvi fit --save'."
        )
    if not hasattr(mixture, "n_features_in_"):
        raise InputError(
            f"{path} holds an unfitted {type(mixture).__name__}; save a fitted "
            "model, e.g. with 'skvi fit --save'."
        )
    return model


# -------------------------------------------------------------- helpers
def _skops():
    try:
        import skops.io as sio
    except ImportError:
        raise ImportError(
            "Saving and loading models needs skops: pip install skops (or, "
            'from the skvi repository, pip install ".[persist]").'
        ) from None
    return sio


def _names(text, option="--columns"):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise InputError(f"{option} needs at least one column name.")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(f"{option} names {twice[0]!r} twice; name each once.")
    return names


def _plot_columns(text, names):
    if text is None:
        if len(names) < 2:
            raise InputError("--plot draws two columns; fit at least two.")
        return None  # the figure chooses the two that separate best
    chosen = _names(text, "--plot-columns")
    if len(chosen) != 2 or any(name not in names for name in chosen):
        raise InputError(
            f"--plot-columns must name two of the fitted columns ({', '.join(names)})."
        )
    return tuple(names.index(name) for name in chosen)


def _check_existing_directory(directory):
    if not os.path.isdir(directory):
        raise InputError(f"Cannot write there: no such directory {directory}.")
    if not os.access(directory, os.W_OK):
        raise InputError(f"Cannot write to the directory {directory}.")


def _check_writable(directory):
    """Create ``directory`` if needed; raise if files cannot be written there."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"Cannot create the output directory {directory}: {error.strerror}."
        ) from None
    if not os.access(directory, os.W_OK):
        raise InputError(f"Cannot write to the output directory {directory}.")


@contextlib.contextmanager
def _replaced(path):
    """A temporary path next to ``path``, renamed to it once written.

    A command that fails while writing leaves no truncated file, and the
    file of an earlier run stays whole until the new one replaces it.
    """
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    os.close(handle)
    try:
        # mkstemp makes the file private; give it the usual permissions.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2)
        file.write("\n")


def _plain(value):
    """A JSON-ready copy: arrays as lists, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return repr(value)
