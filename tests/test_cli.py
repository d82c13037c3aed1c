"""The command line, run as a user runs it: ``python -m skvi`` in a subprocess."""

import csv
import io
import json
import os
import pickle
import resource
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from sklearn.datasets import load_iris
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from skvi import EMGaussianMixture, VariationalGaussianMixture, select_model
from skvi._cli import build_parser, main
from skvi._figures import components_holding_data, fit_title, separating_columns
from skvi._table import InputError, read_table
from skvi.datasets import load_old_faithful

FAITHFUL = os.path.join(
    os.path.dirname(__import__("skvi.datasets").datasets.__file__),
    "data",
    "old_faithful.csv",
)


def skvi(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "skvi", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def run_cli(capsys, *args):
    """The command line in this process (faster): status, stdout, stderr."""
    try:
        status = main([str(argument) for argument in args])
    except SystemExit as exit:  # argparse's usage errors
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def write(path, text):
    path.write_text(text)
    return str(path)


def test_fit_writes_labels_summary_figures_and_a_model(tmp_path, capsys):
    out = tmp_path / "out"
    model_file = str(tmp_path / "model.skops")
    result = skvi(
        "fit", FAITHFUL, "--n-components", "3", "--covariance-type", "tied",
        "--plot", "--save", model_file, "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    summary = json.loads((out / "summary.json").read_text())
    # skvi fit starts from select_model's hierarchical agglomeration.
    reference = EMGaussianMixture(
        3,
        covariance_type="tied",
        init_params="hc_mclust",
        random_state=0,
        relative_tol=1e-5,
        max_iter=1000,
    )
    reference.fit(load_old_faithful().data)
    assert summary["n_iter"] == reference.n_iter_
    assert summary["converged"] is True
    assert_allclose(summary["lower_bounds"], reference.lower_bounds_, rtol=1e-12)
    assert_allclose(summary["means"], reference.means_, rtol=1e-12)
    assert summary["bic"] == pytest.approx(reference.bic(load_old_faithful().data))
    assert summary["columns"] == ["eruptions", "waiting"]
    assert set(summary["elbo_decomposition"]) >= {"elbo", "entropy", "kl_gap"}
    labels = read_table(str(out / "labels.csv"))
    assert labels.columns[:2] == ["row", "label"]
    assert labels.values.shape == (272, 2 + 3 + 1)
    assert_allclose(labels.values[:, 2:5].sum(axis=1), 1.0, atol=1e-5)
    for figure in ("fit.png",):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"

    # The saved model read back (in this process: the entry point ran above).
    status, _, err = run_cli(
        capsys, "predict", model_file, FAITHFUL, "--output-dir", out
    )
    assert status == 0, err
    predictions = read_table(str(out / "predictions.csv"))
    assert np.array_equal(predictions.values, labels.values)


def test_model_selection_prints_the_table_and_marks_the_choice(tmp_path, capsys):
    # In this process: the module's entry point has its own test above.
    status, out, err = run_cli(
        capsys, "fit", FAITHFUL, "--n-components", "1-4", "--covariance-type",
        "all", "--plot", "--n-jobs", "2", "--output-dir", tmp_path,
    )  # fmt: skip
    assert status == 0, err
    table, best = select_model(
        load_old_faithful().data, range(1, 5), random_state=0, as_frame=False
    )
    rows = [line for line in out.splitlines() if line[2:12].strip()]
    marked = [
        line
        for line in out.splitlines()
        if line.startswith("* ") and "chosen" not in line
    ]
    assert len(marked) == 1
    assert marked[0].split()[1:3] == [str(best.n_components), best.covariance_type]
    assert len(rows) >= 56  # 'all': mclust's fourteen models
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["selection"]) == 56
    assert summary["parameters"]["n_components"] == best.n_components
    assert (tmp_path / "selection.png").read_bytes()[:4] == b"\x89PNG"


def test_vi_with_weights_columns_and_missing_cells(tmp_path, capsys):
    lines = ["a,b,label,count"]
    rng = np.random.RandomState(0)
    for i in range(120):
        a, b = rng.normal(size=2) + (4 * (i % 2))
        cell = "" if i % 10 == 0 else f"{b:.4f}"
        lines.append(f"{a:.4f},{cell},x{i % 2},{1 + i % 3}")
    data = write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    status, out, err = run_cli(
        capsys, "fit", data, "--method", "vi", "--n-components", "3",
        "--weight-column", "count", "--verbose", "--output-dir", tmp_path,
    )  # fmt: skip
    assert status == 0, err
    assert "Iteration 1" in out and "ELBO -" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    # The text column is skipped, the weight column is not a feature.
    assert summary["columns"] == ["a", "b"]
    assert summary["estimator"] == "VariationalGaussianMixture"


def test_every_command_has_help_with_examples(capsys):
    # In this process: a subprocess per command cost 2.5 s of imports each,
    # and the fit test above runs ``python -m skvi`` itself.
    for command in ("fit", "predict", "demo"):
        status, out, _ = run_cli(capsys, command, "--help")
        assert status == 0
        assert "examples:" in out


def test_every_option_says_what_it_does():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"skvi {name} {action.option_strings} has no help"


def test_standardize_fits_and_predicts_as_the_python_pipeline(tmp_path, capsys):
    sio = pytest.importorskip("skops.io", reason="the test extra installs skops")
    model = tmp_path / "model.skops"
    status, out, err = run_cli(
        capsys, "fit", FAITHFUL, "--standardize", "--covariance-type", "diag",
        "--save", model, "--output-dir", tmp_path,
    )  # fmt: skip
    assert status == 0, err
    assert "of the standardized columns" in out
    X = load_old_faithful().data
    pipeline = make_pipeline(
        StandardScaler(),
        EMGaussianMixture(
            2, covariance_type="diag", init_params="hc_mclust", random_state=0
        ),
    ).fit(X)
    labels = read_table(str(tmp_path / "labels.csv")).values
    assert np.array_equal(labels[:, 1], pipeline.predict(X))
    assert_allclose(labels[:, 2:4], pipeline.predict_proba(X), atol=1e-6)
    assert_allclose(labels[:, 4], pipeline.score_samples(X), rtol=1e-9)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert_allclose(summary["standardize"]["scale"], X.std(axis=0), rtol=1e-12)
    assert_allclose(summary["means"], pipeline[-1].means_, rtol=1e-10)

    # 'skvi predict' applies the saved scaling to new rows.
    shifted = write(tmp_path / "new.csv", _saved(X[:50] + 1.0, header=None))
    status, _, err = run_cli(
        capsys, "predict", model, shifted, "--output-dir", tmp_path
    )
    assert status == 0, err
    predictions = read_table(str(tmp_path / "predictions.csv")).values
    expected = pipeline.predict_proba(X[:50] + 1.0)
    assert_allclose(predictions[:, 2:4], expected, atol=1e-6)

    loaded = sio.load(model, trusted=sio.get_untrusted_types(file=model))
    assert isinstance(loaded, Pipeline)
    assert list(loaded.feature_names_in_) == ["eruptions", "waiting"]


def _wide_clusters():
    """Two clusters apart in columns 'c' and 'e' only; 'a' is constant."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 5))
    X[:, 0] = 0.0
    X[100:, 2] += 6.0
    X[100:, 4] -= 6.0
    X[:, 3] *= 1000.0  # a wide column that separates nothing
    return X


def test_the_figure_draws_the_separating_columns_and_only_used_components(
    tmp_path, capsys
):
    X = _wide_clusters()
    # A start that does not depend on the units finds the two clusters.
    em = EMGaussianMixture(2, init_params="hc", random_state=0).fit(X)
    assert separating_columns(em) == (2, 4)
    vi = VariationalGaussianMixture(
        n_components=8, init_params="hc", random_state=0
    ).fit(X)
    holding = components_holding_data(vi, X.shape[0], vi.predict(X))
    assert holding.sum() == 2
    assert separating_columns(vi, holding) == (2, 4)
    assert fit_title(vi, holding) == "2 of 8 components hold data, full"
    assert fit_title(em, np.ones(2, bool)) == "2 components, full"

    # The command line draws them and says so.
    data = write(tmp_path / "wide.csv", _saved(X, header=tuple("abcde")))
    status, out, err = run_cli(
        capsys, "fit", data, "--method", "vi", "--n-components", "8", "--plot",
        "--output-dir", tmp_path,
    )  # fmt: skip
    assert status == 0, err
    assert "fit.png (columns c, e)" in out
    assert "8 components (2 hold data)" in out
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_matplotlib_stops_plot_before_any_fit(tmp_path, capsys, monkeypatch):
    # None in sys.modules makes 'import matplotlib' raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out_dir = tmp_path / "out"
    status, out, err = run_cli(
        capsys, "fit", FAITHFUL, "--plot", "--output-dir", out_dir
    )
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1 and "pip install matplotlib" in err
    assert not out_dir.exists()


def test_a_failed_write_keeps_the_old_file_whole(tmp_path, capsys):
    # A file-size limit makes writing labels.csv fail partway, as a full
    # disk would; the labels of the earlier run must survive intact. The
    # limit is this process's during the command only (Python ignores
    # SIGXFSZ: the write fails with EFBIG), instead of a subprocess's
    # 2.5 s of imports.
    old = "row,label\n0,1\n"
    (tmp_path / "labels.csv").write_text(old)
    limit = 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        status, _, err = run_cli(capsys, "fit", FAITHFUL, "--output-dir", tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert status == 1
    assert err.count("\n") == 1, err
    assert (tmp_path / "labels.csv").read_text() == old
    assert sorted(os.listdir(tmp_path)) == ["labels.csv"]


@pytest.fixture
def files(tmp_path):
    good = FAITHFUL
    return {
        "missing": str(tmp_path / "nope.csv"),
        "empty": write(tmp_path / "empty.csv", ""),
        "header only": write(tmp_path / "header.csv", "a,b\n"),
        "ragged": write(tmp_path / "ragged.csv", "a,b\n1,2\n3\n"),
        "text": write(tmp_path / "text.csv", "a,b\n1,x\n2,y\n"),
        "binary": str(_binary(tmp_path / "binary.csv")),
        "good": good,
        "tiny": write(tmp_path / "tiny.csv", "a,b\n1,2\n3,4\n"),
        "not a model": write(tmp_path / "model.skops", "not a zip"),
        "pickle": str(_pickled(tmp_path / "model.pkl")),
        "a file": write(tmp_path / "plain", "x"),
    }


def _binary(path):
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _pickled(path):
    path.write_bytes(pickle.dumps({"not": "a model"}))
    return path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["fit", "{missing}"], "No such file"),
        (["fit", "{empty}"], "is empty"),
        (["fit", "{header only}"], "no data rows"),
        (["fit", "{ragged}"], "ragged.csv, line 3: 1 cell where the header has 2"),
        (["fit", "{binary}"], "not a text"),
        (["fit", "{text}", "--columns", "a,b"], "Column 'b'"),
        (["fit", "{good}", "--columns", "eruptions,height"], "no column 'height'"),
        (["fit", "{good}", "--n-components", "9-1"], "not a number, a range"),
        (["fit", "{good}", "--n-components", "x"], "not a number, a range"),
        (["fit", "{good}", "--n-components", "3-"], "not a number, a range"),
        (["fit", "{good}", "--covariance-type", "round"], "type 'round'; use"),
        (["fit", "{tiny}", "--n-components", "3"], "more than the 2 rows with a"),
        (["fit", "{good}", "--output-dir", "{a file}"], "output directory"),
        (["fit", "{good}", "--weight-column", "none"], "no column 'none'"),
        (["predict", "{not a model}", "{good}"], "not a model saved by skvi"),
        (["predict", "{pickle}", "{good}"], "not a model saved by skvi"),
        (["predict", "{missing}", "{good}"], "No model file"),
        (["demo", "--output", "/no/such/dir/x.png"], "no such directory"),
        (["fit"], "required"),
        (["fit", "{good}", "--max-iter", "many"], "invalid int value"),
    ],
)
def test_errors_are_one_line_and_a_nonzero_status(files, arguments, message, capsys):
    status, out, err = run_cli(
        capsys, *(argument.format(**files) for argument in arguments)
    )
    assert status != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]


def test_a_skops_file_of_another_model_is_refused(tmp_path, capsys):
    sio = pytest.importorskip("skops.io", reason="the test extra installs skops")
    from sklearn.mixture import GaussianMixture

    path = str(tmp_path / "sklearn.skops")
    sio.dump(GaussianMixture(2).fit(load_old_faithful().data), path)
    status, _, err = run_cli(capsys, "predict", path, FAITHFUL)
    assert status == 1
    assert "is not a skvi model" in err


# ---------------------------------------------- reading files as people save them
def _two_clusters():
    """40 rows of two columns, as written with four decimals."""
    rng = np.random.RandomState(1)
    X = np.vstack([rng.normal(size=(20, 2)), rng.normal(size=(20, 2)) + 6])
    return np.round(X, 4)


def _cells(X, decimal=".", quote=""):
    return [
        [quote + f"{value:.4f}".replace(".", decimal) + quote for value in row]
        for row in X
    ]


def _saved(X, delimiter=",", header=("a", "b"), decimal=".", quote="", end="\n"):
    rows = ([list(header)] if header else []) + _cells(X, decimal, quote)
    return "".join(delimiter.join(row) + end for row in rows)


X_SAVED = _two_clusters()

# name: (bytes of the file, what the reading should report)
SAVED_FILES = {
    "comma": (_saved(X_SAVED).encode(), (",", ".", True)),
    "Excel CSV UTF-8: BOM, quoted cells, CRLF": (
        b"\xef\xbb\xbf" + _saved(X_SAVED, quote='"', end="\r\n").encode(),
        (",", ".", True),
    ),
    "European Excel: semicolons, decimal commas, blank lines at the end": (
        (_saved(X_SAVED, ";", decimal=",", end="\r\n") + "\r\n\r\n").encode(),
        (";", ",", True),
    ),
    "tab-separated, blank lines at the end": (
        (_saved(X_SAVED, "\t") + "\n\n\n").encode(),
        ("\t", ".", True),
    ),
    "Excel Unicode text: UTF-16, tabs": (
        _saved(X_SAVED, "\t", end="\r\n").encode("utf-16"),
        ("\t", ".", True),
    ),
    "no header row": (_saved(X_SAVED, header=None).encode(), (",", ".", False)),
    "old Mac line endings": (_saved(X_SAVED, end="\r").encode(), (",", ".", True)),
}


@pytest.mark.parametrize("name", list(SAVED_FILES))
def test_every_common_csv_dialect_fits_exactly_the_data_it_holds(
    name, tmp_path, capsys
):
    content, (delimiter, decimal, header) = SAVED_FILES[name]
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    status, out, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 0, err
    assert err == ""
    summary = json.loads((tmp_path / "summary.json").read_text())
    reading = summary["input"]
    assert (reading["delimiter"], reading["decimal"], reading["header"]) == (
        delimiter,
        decimal,
        header,
    )
    assert summary["columns"] == (["a", "b"] if header else ["1", "2"])
    assert summary["n_rows"] == 40
    assert out.splitlines()[0].startswith(f"Read {data} (")
    assert "40 rows, columns" in out.splitlines()[0]
    reference = EMGaussianMixture(
        n_components=2, init_params="hc_mclust", random_state=0
    ).fit(X_SAVED)
    assert_allclose(summary["means"], reference.means_, rtol=1e-12)
    assert_allclose(summary["lower_bounds"], reference.lower_bounds_, rtol=1e-12)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    values=st.integers(1, 12).flatmap(
        lambda n: st.integers(1, 4).flatmap(
            lambda d: st.lists(
                st.lists(
                    st.floats(allow_infinity=False) | st.sampled_from([0.0, 1.5]),
                    min_size=d,
                    max_size=d,
                ),
                min_size=n,
                max_size=n,
            )
        )
    ),
    delimiter=st.sampled_from([",", ";", "\t"]),
    header=st.booleans(),
    comma=st.booleans(),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    quote_all=st.booleans(),
    missing=st.sampled_from(["", "NA", "nan", "#N/A"]),
)
def test_the_reader_gives_back_exactly_the_numbers_written(
    tmp_path, values, delimiter, header, comma, end, bom, quote_all, missing
):
    X = np.array(values)
    # Rows of empty cells at either end of a file are not rows (documented).
    if missing == "":
        has_value = ~np.isnan(X).all(axis=1)
        if not has_value.any():
            return
        first, last = np.flatnonzero(has_value)[[0, -1]]
        X = X[first : last + 1]
    decimal = "," if comma and delimiter != "," else "."
    if decimal == "," and X.shape[1] == 1 and not header:
        return  # "1,5" alone could be two integers: --delimiter decides (documented)
    text = io.StringIO()
    writer = csv.writer(
        text,
        delimiter=delimiter,
        lineterminator=end,
        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
    )
    if header:
        writer.writerow([f"c{j}" for j in range(X.shape[1])])
    for row in X:
        writer.writerow(
            [
                missing if np.isnan(v) else repr(float(v)).replace(".", decimal)
                for v in row
            ]
        )
    path = tmp_path / "data.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.getvalue().encode())
    table = read_table(str(path))
    assert table.header == header
    assert table.values.shape == X.shape
    assert np.array_equal(table.values, X, equal_nan=True)
    assert table.decimal == decimal or X.shape[1] == 1 or "," not in text.getvalue()


def test_a_file_of_one_column(tmp_path, capsys):
    column = X_SAVED[:, :1]
    data = write(tmp_path / "one.csv", _saved(column, header=("x",), decimal=","))
    status, out, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 0, err
    assert "(one column, a header row, decimal comma, UTF-8): 40 rows" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    reference = EMGaussianMixture(
        n_components=2, init_params="hc_mclust", random_state=0
    ).fit(column)
    assert_allclose(summary["means"], reference.means_, rtol=1e-12)


def test_the_reading_flags_override_the_detection(tmp_path, capsys):
    # A header of numbers (years) is taken for data unless --header says so.
    data = write(tmp_path / "years.csv", _saved(X_SAVED, ";", ("2019", "2020")))
    # Read as data, the header is an outlier that a second component would
    # hold alone (a degenerate fit, refused): one component reads it.
    status, out, err = run_cli(
        capsys, "fit", data, "--n-components", "1", "--output-dir", tmp_path
    )
    assert status == 0, err
    assert "41 rows" in out and "no header row" in out
    status, out, _ = run_cli(
        capsys, "fit", data, "--header", "--delimiter", "semicolon",
        "--output-dir", tmp_path,
    )  # fmt: skip
    assert status == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["columns"] == ["2019", "2020"] and summary["n_rows"] == 40
    # Decimal commas in a comma-separated file, quoted: only when asked.
    quoted = write(tmp_path / "q.csv", _saved(X_SAVED, decimal=",", quote='"'))
    status, _, err = run_cli(capsys, "fit", quoted, "--output-dir", tmp_path)
    assert status == 1
    assert "q.csv, line 2, column 'a':" in err and "--decimal ','" in err
    status, _, err = run_cli(
        capsys, "fit", quoted, "--decimal", ",", "--output-dir", tmp_path
    )
    assert status == 0, err
    fitted = json.loads((tmp_path / "summary.json").read_text())["means"]
    reference = EMGaussianMixture(
        n_components=2, init_params="hc_mclust", random_state=0
    ).fit(X_SAVED)
    assert_allclose(fitted, reference.means_, rtol=1e-12)
    # A cp1252 file is refused with the way out, which then reads it.
    latin = tmp_path / "latin.csv"
    latin.write_bytes(_saved(X_SAVED, header=("Größe", "b")).encode("cp1252"))
    status, _, err = run_cli(capsys, "fit", latin, "--output-dir", tmp_path)
    assert status == 1 and "line 1 holds the byte 0xf6" in err
    assert "--encoding cp1252" in err
    status, _, err = run_cli(
        capsys, "fit", latin, "--encoding", "cp1252", "--output-dir", tmp_path
    )
    assert status == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["columns"] == ["Größe", "b"]


@pytest.mark.parametrize(
    ("cell", "saved", "message"),
    [
        ("4..9", _saved, "'4..9' is not a number"),
        ('"1,5"', _saved, "'1,5' is not a number (thousands separators"),
        ("1_5", _saved, "'1_5' is not a number"),
        ("inf", _saved, "'inf' is not a number"),
        ("1e999", _saved, "'1e999' is too large"),
        (
            "1.5",
            lambda X: _saved(X, ";", decimal=","),
            "'1.5' is not a number: the file was read with decimal commas",
        ),
    ],
)
def test_one_bad_cell_stops_the_fit_naming_file_line_column_and_cell(
    cell, saved, message, tmp_path, capsys
):
    lines = saved(X_SAVED).splitlines()
    delimiter = ";" if ";" in lines[0] else ","
    lines[6] = delimiter.join([lines[6].split(delimiter)[0], cell])
    data = write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    status, out, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 1 and out == ""
    assert err.count("\n") == 1
    assert f"bad.csv, line 7, column 'b': {message}" in err
    assert not (tmp_path / "labels.csv").exists()
    # Leaving the column out fits every row of the other one.
    status, _, err = run_cli(
        capsys, "fit", data, "--columns", "a", "--output-dir", tmp_path
    )
    assert status == 0, err
    assert json.loads((tmp_path / "summary.json").read_text())["n_rows"] == 40


@pytest.mark.parametrize("method", ["em", "vi"])
def test_rows_with_no_value_keep_their_place(method, tmp_path, capsys):
    lines = _saved(X_SAVED).splitlines()
    lines[5:5] = [","]  # a row of empty cells (line 6)
    lines[12:12] = [""]  # a blank line (line 13)
    lines[20:20] = ["NA,"]  # missing cells (line 21)
    data = write(tmp_path / "gaps.csv", "\n".join(lines) + "\n\n\n")
    status, out, err = run_cli(
        capsys, "fit", data, "--method", method, "--output-dir", tmp_path
    )
    assert status == 0, err
    assert "43 rows" in out
    assert "3 rows with no value (lines 6, 13, 21), left out of the fit" in out
    assert "ignored 2 blank lines" in out
    X = np.insert(X_SAVED, [4, 10, 17], np.nan, axis=0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["input"]["lines_with_no_value"] == [6, 13, 21]
    assert summary["input"]["missing_cells"] == 6
    # The fit is that of the rows with a value; every row gets a line.
    estimator = EMGaussianMixture if method == "em" else VariationalGaussianMixture
    reference = estimator(n_components=2, init_params="hc_mclust", random_state=0)
    reference.fit(X[~np.isnan(X).all(axis=1)])
    assert_allclose(summary["means"], reference.means_, rtol=1e-12)
    assert_allclose(summary["lower_bounds"], reference.lower_bounds_, rtol=1e-12)
    labels = read_table(str(tmp_path / "labels.csv"))
    assert np.array_equal(labels.values[:, 0], np.arange(43))
    # A row with no value gets a component of largest weight; here the two
    # weights are 0.5 up to rounding, which breaks the tie.
    empty = np.isnan(X).all(axis=1)
    assert np.array_equal(labels.values[~empty, 1], reference.predict(X[~empty]))
    weights = reference.weights_
    largest = np.flatnonzero(np.isclose(weights, weights.max(), rtol=1e-12, atol=0))
    assert np.isin(labels.values[empty, 1], largest).all()


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_rows_of_empty_cells_at_the_end_are_rows(delimiter, tmp_path, capsys):
    # Review 17: pandas writes a row of NaN as ",,"; the last rows of a
    # frame with no value vanished from labels.csv. (Excel writes rows of
    # empty cells it once formatted so: they are said as rows with no value.)
    frame = pd.DataFrame(X_SAVED, columns=["a", "b"])
    frame.iloc[[0, 38, 39]] = np.nan
    data = tmp_path / "frame.csv"
    frame.to_csv(data, index=False, sep=delimiter)
    status, out, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 0, err
    assert "3 rows with no value (lines 2, 40, 41), left out of the fit" in out
    assert "ignored" not in out
    labels = read_table(str(tmp_path / "labels.csv"))
    assert np.array_equal(labels.values[:, 0], np.arange(40))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["input"]["lines_with_no_value"] == [2, 40, 41]


def test_thousands_separators_are_not_read_as_decimals(tmp_path, capsys):
    # Review 17: a German export grouping thousands with points, and a tab
    # file grouping them with commas, were read 1000 times too small.
    german = write(
        tmp_path / "de.csv", "Einwohner;Quote\n1.161;73\n335;31\n1.196;72\n870;12\n"
    )
    tabs = write(
        tmp_path / "us.tsv",
        "county\tpopulation\tarea\nA\t986,772\t184\nB\t306,711\t29\nC\t12,345\t55\n",
    )
    for data, column, mark in ((german, "Einwohner", "."), (tabs, "population", ",")):
        status, _, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
        assert status == 1, err
        assert f"column {column!r} has three digits after it" in err
        assert f"pass --decimal {mark!r} if they are decimals" in err
        # Said to be decimals, they are read so.
        table = read_table(data, decimal=mark)
        assert table.values[0, table.columns.index(column)] in (1.161, 986.772)
    # Three decimals everywhere (NumPy's savetxt with fmt="%.3f") are
    # decimals where another column shows it (0.200).
    X = load_iris().data
    saved = tmp_path / "iris.tsv"
    np.savetxt(saved, X, fmt="%.3f", delimiter="\t", header="a\tb\tc\td", comments="")
    assert np.array_equal(read_table(str(saved)).values, X)


def test_text_columns_are_skipped_and_said_so(tmp_path, capsys):
    lines = _saved(X_SAVED).splitlines()
    lines = [lines[0] + ",name,empty"] + [
        f"{line},x{i}," for i, line in enumerate(lines[1:])
    ]
    data = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    status, out, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 0, err
    assert "skipped text column 'name', empty column 'empty'" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["columns"] == ["a", "b"]
    assert summary["input"]["skipped_columns"] == {"name": "text", "empty": "empty"}
    status, _, err = run_cli(
        capsys, "fit", data, "--columns", "a,empty", "--output-dir", tmp_path
    )
    assert status == 1 and "Column 'empty' of" in err and "has no value" in err


@pytest.mark.parametrize("first", [1, 0], ids=["R write.csv", "pandas to_csv"])
def test_a_column_of_row_names_is_not_fitted(tmp_path, capsys, first):
    # R's write.csv and pandas' to_csv write the rows' names or numbers in a
    # first column with an empty header cell; read as data, the row numbers
    # were a feature (R's airquality so saved fitted 7 columns, not 6).
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X_SAVED, columns=["a", "b"])
    frame.index += first
    data = tmp_path / "rows.csv"
    frame.to_csv(data, index=True, index_label="" if first else None)
    assert data.read_text().splitlines()[1].startswith(f"{first},")
    status, out, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 0, err
    assert "columns a, b;" in out
    assert "skipped row-name column '(row names)'" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["columns"] == ["a", "b"]
    assert summary["input"]["skipped_columns"] == {"(row names)": "row-name"}
    # Chosen by name, it is a column like any other.
    status, out, err = run_cli(
        capsys, "fit", data, "--columns", "(row names),a", "--output-dir", tmp_path
    )
    assert status == 0 and "columns (row names), a;" in out, err


@pytest.mark.parametrize("how", ["dropna", "sort_values", "sample"])
def test_the_index_of_a_filtered_or_reordered_frame_is_not_fitted(
    how, tmp_path, capsys
):
    # Review 17: pandas writes the index it kept (0, 1, 3, ... or in any
    # order) under an empty header cell; it was fitted as a column '1'.
    frame = pd.DataFrame(X_SAVED, columns=["a", "b"])
    frame.loc[[3, 17], "a"] = np.nan
    kept = {
        "dropna": frame.dropna(),
        "sort_values": frame.sort_values("b"),
        "sample": frame.sample(frac=1, random_state=0),
    }[how]
    data = tmp_path / "kept.csv"
    kept.to_csv(data)
    summary, values, first = _fitted_columns(capsys, tmp_path, data)
    assert summary["columns"] == ["a", "b"]
    assert "skipped row-name column '(row names)'" in first
    assert np.array_equal(values, kept.to_numpy(), equal_nan=True)
    # Fractions under an empty header cell are data.
    frame.index = frame.index + 0.5
    frame.to_csv(data)
    summary, _, _ = _fitted_columns(capsys, tmp_path, data)
    assert summary["columns"] == ["1", "a", "b"]


def _fitted_columns(capsys, tmp_path, data, *options, delimiter=None):
    """The columns ``skvi fit`` fitted, their values, and its first line."""
    if delimiter is not None:
        options = (*options, "--delimiter", delimiter)
    status, out, err = run_cli(capsys, "fit", data, *options, "--output-dir", tmp_path)
    assert status == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    table = read_table(str(data), delimiter=delimiter)
    values = table.values[:, [table.columns.index(c) for c in summary["columns"]]]
    return summary, values, out.splitlines()[0]


def test_files_r_write_table_and_numpy_savetxt_write_by_default(tmp_path, capsys):
    # R's write.table: cells separated by a blank, quoted names, and a
    # header with no cell over the row names (read.table's rule).
    rows = [
        f'"{i + 1}" {float(a)!r}  {float(b)!r} "g{i % 2}"'
        for i, (a, b) in enumerate(X_SAVED)
    ]
    data = write(tmp_path / "r.txt", '"a" "b" "group"\n' + "\n".join(rows) + "\n")
    # Blanks are chosen, not detected (they also group thousands): the
    # error says which option reads the file.
    status, _, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 1 and "pass --delimiter whitespace" in err, err
    summary, values, first = _fitted_columns(
        capsys, tmp_path, data, delimiter="whitespace"
    )
    assert "(whitespace-separated, a header row, decimal point, UTF-8)" in first
    assert summary["columns"] == ["a", "b"]
    assert np.array_equal(values, X_SAVED)
    assert summary["input"]["skipped_columns"] == {
        "(row names)": "row-name",
        "group": "text",
    }
    # The same with commas (write.table(sep = ",")) is detected.
    rows = [line.replace("  ", " ").replace(" ", ",") for line in rows]
    data = write(tmp_path / "r.csv", '"a","b","group"\n' + "\n".join(rows) + "\n")
    summary, values, _ = _fitted_columns(capsys, tmp_path, data)
    assert summary["columns"] == ["a", "b"] and np.array_equal(values, X_SAVED)
    # A header one cell short over numbers that are no row names (decimal
    # commas in a comma file) is an error, not a shifted table.
    data = write(tmp_path / "short.csv", "weight,age\n72,5,34\n80,1,45\n65,9,29\n")
    status, _, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 1 and "line 2: 3 cells where the header has 2" in err, err
    data = write(tmp_path / "odd.csv", "a,b\n1,2,3\n4,5\n6,7\n")
    status, _, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 1 and "line 2: 3 cells where the header has 2" in err, err
    # NumPy's savetxt: blanks, and a header after '# ' when given one;
    # other comment lines at the top and the end are skipped and counted.
    plain = tmp_path / "plain.txt"
    np.savetxt(plain, X_SAVED, header="a b", footer="end")
    summary, values, first = _fitted_columns(
        capsys, tmp_path, plain, delimiter="whitespace"
    )
    assert summary["columns"] == ["a", "b"] and np.array_equal(values, X_SAVED)
    assert "skipped 1 comment line (#)" in first  # the footer
    named = tmp_path / "named.csv"
    np.savetxt(named, X_SAVED, delimiter=",", header="a,b")
    summary, values, first = _fitted_columns(capsys, tmp_path, named)
    assert summary["columns"] == ["a", "b"] and np.array_equal(values, X_SAVED)
    assert "comment" not in first
    noted = write(tmp_path / "noted.csv", "# from the lab\n#\n" + _saved(X_SAVED))
    summary, values, first = _fitted_columns(capsys, tmp_path, noted)
    assert summary["columns"] == ["a", "b"] and np.array_equal(values, X_SAVED)
    assert "skipped 2 comment lines (#)" in first
    assert summary["input"]["comment_lines"] == 2
    # A header that starts with '# ' over rows holding text loses no row; a
    # last row whose first cell starts with '# ' is a row, not a footer.
    data = write(tmp_path / "items.csv", "# of items,name\n3,fig\n4,yew\n5,oak\n")
    table = read_table(data)
    assert table.columns == ["of items", "name"] and len(table.values) == 3
    data = write(tmp_path / "tags.csv", "tag,x\na,1.5\nb,2.5\n# 4,4.2\n")
    assert np.array_equal(read_table(data).values[:, 1], [1.5, 2.5, 4.2])
    # Runs of blanks end a line before '\r\n' as before '\n'.
    crlf = '"x" "y" \r\n"1" 1.5 2\r\n"2"  2.5 3 \r\n'
    table = read_table(write(tmp_path / "crlf.txt", crlf), delimiter="whitespace")
    assert table.columns == ["(row names)", "x", "y"] and table.row_names
    assert np.array_equal(table.values[:, 1:], [[1.5, 2], [2.5, 3]])
    # Excel's #N/A starting the first row is a missing cell, not a comment;
    # rows that only end with a delimiter do not make the first column
    # row names; one blank is one delimiter (an empty cell between two).
    data = write(tmp_path / "na.csv", "#N/A,1\n" + _saved(X_SAVED, header=None))
    assert np.isnan(read_table(data).values[0, 0])
    assert read_table(data).values.shape == (len(X_SAVED) + 1, 2)
    header, body = _saved(X_SAVED).split("\n", 1)
    trailing = header + "\n" + body.replace("\n", ",\n")
    table = read_table(write(tmp_path / "trailing.csv", trailing))
    assert table.columns == ["a", "b"] and not table.row_names
    table = read_table(
        write(tmp_path / "gap.txt", "a b c\n1  3\n4 5 6\n"), delimiter=" "
    )
    assert np.array_equal(table.values, [[1, np.nan, 3], [4, 5, 6]], equal_nan=True)


def test_a_column_that_numbers_the_rows_is_not_fitted(tmp_path, capsys):
    # A database export's id: clusters fitted on it follow the file's order.
    ids = 1000.0 + np.arange(len(X_SAVED))
    saved = np.column_stack([ids, X_SAVED])
    data = write(tmp_path / "ids.csv", _saved(saved, header=("user_id", "a", "b")))
    summary, values, first = _fitted_columns(capsys, tmp_path, data)
    assert summary["columns"] == ["a", "b"] and np.array_equal(values, X_SAVED)
    assert "skipped row-number column 'user_id'" in first
    assert "name it in --columns to fit it" in first
    assert summary["input"]["skipped_columns"] == {"user_id": "row-number"}
    # Chosen by name, it is fitted; in another order it still names the
    # rows (review 17: a shuffled export's ids were fitted); repeated
    # values are data.
    summary, _, _ = _fitted_columns(capsys, tmp_path, data, "--columns", "user_id,a")
    assert summary["columns"] == ["user_id", "a"]
    shuffled = np.column_stack([np.random.default_rng(0).permutation(ids), X_SAVED])
    data = write(tmp_path / "back.csv", _saved(shuffled, header=("id", "a", "b")))
    summary, _, first = _fitted_columns(capsys, tmp_path, data)
    assert summary["columns"] == ["a", "b"]
    assert "skipped row-number column 'id'" in first
    repeated = np.column_stack([ids // 2, X_SAVED])
    data = write(tmp_path / "pairs.csv", _saved(repeated, header=("id", "a", "b")))
    summary, _, first = _fitted_columns(capsys, tmp_path, data)
    assert summary["columns"] == ["id", "a", "b"] and "counts the rows" not in first
    # Under another name (a yearly series) it is fitted, and pointed at.
    data = write(tmp_path / "years.csv", _saved(saved, header=("year", "a", "b")))
    summary, _, first = _fitted_columns(capsys, tmp_path, data)
    assert summary["columns"] == ["year", "a", "b"]
    assert "column 'year' counts the rows" in first
    # A file of nothing else says what to do.
    data = write(tmp_path / "only.csv", _saved(ids[:, None], header=("ID",)))
    status, _, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 1
    assert "column 'ID' numbers the rows" in err and "--columns" in err


def test_row_names_of_the_rows_r_kept(tmp_path, capsys):
    # write.csv(na.omit(airquality)): R quotes the names of the rows it
    # kept, "1","2","3","4","7",...; they were fitted as a column '1'.
    kept = [1, 2, 3, 4, 7, 8, 9, 12, 13, 14] + list(range(15, 45))
    lines = _saved(X_SAVED).splitlines()
    rows = [f'"{name}",{line}' for name, line in zip(kept, lines[1:], strict=True)]
    data = write(tmp_path / "kept.csv", '"",' + lines[0] + "\n" + "\n".join(rows))
    summary, values, first = _fitted_columns(capsys, tmp_path, data)
    assert summary["columns"] == ["a", "b"] and np.array_equal(values, X_SAVED)
    assert "skipped row-name column '(row names)'" in first
    # So does write.table of a subset, under a header one cell short.
    spaced = [
        f'"{name}" {line.replace(",", " ")}'
        for name, line in zip(kept, lines[1:], strict=True)
    ]
    data = write(tmp_path / "kept.txt", "a b\n" + "\n".join(spaced) + "\n")
    table = read_table(data, delimiter="whitespace")
    assert table.row_names and np.array_equal(table.values[:, 1:], X_SAVED)
    # Unquoted under an empty header cell, as pandas writes an index, too.
    rows = [f"{name},{line}" for name, line in zip(kept, lines[1:], strict=True)]
    table = read_table(
        write(tmp_path / "data.csv", "," + lines[0] + "\n" + "\n".join(rows))
    )
    assert table.row_names and table.columns == ["(row names)", "a", "b"]


def test_a_first_row_of_labels_and_numbers_is_no_header_by_guess(tmp_path, capsys):
    # A file without a header whose first column labels the rows: its
    # first row was taken as the header, one row of data silently lost.
    lines = _saved(X_SAVED).splitlines()[1:]
    labelled = "\n".join(f"s{i},{line}" for i, line in enumerate(lines)) + "\n"
    data = write(tmp_path / "labels.csv", labelled)
    status, _, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 1 and "line 1: the first row (s0," in err, err
    assert "--header" in err and "--no-header" in err
    table = read_table(data, header=False)
    assert np.array_equal(table.values[:, 1:], X_SAVED)
    # R's write.table(col.names = FALSE) quotes the names, not the numbers:
    # a row of data, every row read.
    quoted = "\n".join(f'"car {i}",{line}' for i, line in enumerate(lines)) + "\n"
    summary, values, first = _fitted_columns(
        capsys, tmp_path, write(tmp_path / "r.csv", quoted)
    )
    assert "no header row" in first and np.array_equal(values, X_SAVED)
    # R quotes names that are numbers too (years over a column of labels):
    # a header; unquoted, such a file is ambiguous and says so.
    years = '"country","2019","2020"\n' + quoted
    table = read_table(write(tmp_path / "years.csv", years))
    assert table.columns == ["country", "2019", "2020"]
    assert np.array_equal(table.values[:, 1:], X_SAVED)
    plain = "country,2019,2020\n" + labelled
    status, _, err = run_cli(
        capsys, "fit", write(tmp_path / "plain.csv", plain), "--output-dir", tmp_path
    )
    assert status == 1 and "Pass --header if it names the columns" in err, err
    table = read_table(tmp_path / "plain.csv", header=True)
    assert table.columns == ["country", "2019", "2020"]
    # Text over a column of numbers still makes a header.
    named = "name,a,2020\n" + labelled
    assert read_table(write(tmp_path / "named.csv", named)).columns[1] == "a"
    # Python's QUOTE_NONNUMERIC header: quoted text, whole numbers (names
    # or data?), an error; a quote inside a cell, or a cell over two lines,
    # says nothing about the quoting (it raised IndexError).
    for first in ('"label",2019,2020', '12" pipe,5.1,3.5'):
        data = write(tmp_path / "odd.csv", first + "\n" + quoted)
        with pytest.raises(InputError, match="Pass --header if it names"):
            read_table(data)
    data = write(tmp_path / "two_lines.csv", '"a\nb",5.5,3.5\n' + quoted)
    assert read_table(data).values.shape == (len(X_SAVED) + 1, 3)
    # R's write.csv of numbers under names that are numbers: quoted names
    # over unquoted numbers are a header, of one row less than the file.
    rows = "\n".join(f'"{i + 1}",{line}' for i, line in enumerate(lines))
    table = read_table(write(tmp_path / "r_years.csv", '"","2019","2020"\n' + rows))
    assert table.columns == ["(row names)", "2019", "2020"]
    assert np.array_equal(table.values[:, 1:], X_SAVED)
    # A file that quotes every cell says nothing: numbers are data.
    every = "\n".join(",".join(f'"{float(v)!r}"' for v in row) for row in X_SAVED)
    table = read_table(write(tmp_path / "all.csv", every + "\n"))
    assert not table.header and np.array_equal(table.values, X_SAVED)


def test_row_names_of_a_frame_with_unnamed_columns_and_numbers_that_are_data(
    tmp_path, capsys
):
    pd = pytest.importorskip("pandas")
    # pandas writes unnamed columns as the header ",0,1": a header, not data.
    data = tmp_path / "unnamed.csv"
    pd.DataFrame(X_SAVED).to_csv(data)
    status, out, err = run_cli(capsys, "fit", data, "--output-dir", tmp_path)
    assert status == 0, err
    assert "a header row" in out and f"{len(X_SAVED)} rows, columns 0, 1;" in out
    assert "skipped row-name column '(row names)'" in out
    # Numbers that do not count the rows, under an empty header cell, are data.
    shifted = write(tmp_path / "data.csv", _saved(X_SAVED, header=("", "b")))
    status, out, err = run_cli(capsys, "fit", shifted, "--output-dir", tmp_path)
    assert status == 0, err
    assert "columns 1, b;" in out and "row-name" not in out


def test_predict_reads_files_the_same_way(tmp_path, capsys):
    model = tmp_path / "model.skops"
    data = write(tmp_path / "data.csv", _saved(X_SAVED))
    status, _, err = run_cli(
        capsys, "fit", data, "--save", model, "--output-dir", tmp_path
    )
    assert status == 0, err
    labels = read_table(str(tmp_path / "labels.csv")).values
    for name in (
        "Excel CSV UTF-8: BOM, quoted cells, CRLF",
        "European Excel: semicolons, decimal commas, blank lines at the end",
        "no header row",
    ):
        new = tmp_path / "new.csv"
        new.write_bytes(SAVED_FILES[name][0])
        status, out, err = run_cli(
            capsys, "predict", model, new, "--output-dir", tmp_path / "p"
        )
        assert status == 0, (name, err)
        assert out.startswith(f"Read {new} (")
        predictions = read_table(str(tmp_path / "p" / "predictions.csv")).values
        assert np.array_equal(predictions, labels), name
    bad = write(tmp_path / "bad.csv", _saved(X_SAVED).replace("\n-", "\n--", 1))
    status, _, err = run_cli(capsys, "predict", model, bad, "--output-dir", tmp_path)
    assert status == 1 and "bad.csv, line " in err and "is not a number" in err
    # The same rows saved with their row numbers (R's write.csv): the model
    # reads its columns by name and leaves the row names out.
    lines = _saved(X_SAVED).splitlines()
    numbered = [",".join(['""', lines[0]])] + [
        f'"{i + 1}",{line}' for i, line in enumerate(lines[1:])
    ]
    new = write(tmp_path / "numbered.csv", "\n".join(numbered) + "\n")
    status, out, err = run_cli(
        capsys, "predict", model, new, "--output-dir", tmp_path / "p"
    )
    assert status == 0, err
    assert "rows, columns a, b;" in out
    predictions = read_table(str(tmp_path / "p" / "predictions.csv")).values
    assert np.array_equal(predictions, labels)
    # A model fitted before row names were read as such took them as a
    # column '1': it is refused with the reason, not read by position.
    sio = pytest.importorskip("skops.io", reason="the test extra installs skops")
    pd = pytest.importorskip("pandas")
    rows = np.column_stack([np.arange(1.0, len(X_SAVED) + 1), X_SAVED])
    old = EMGaussianMixture(n_components=2, random_state=0)
    old.fit(pd.DataFrame(rows, columns=["1", "a", "b"]))
    sio.dump(old, tmp_path / "old.skops")
    status, _, err = run_cli(
        capsys, "predict", tmp_path / "old.skops", new, "--output-dir", tmp_path
    )
    assert status == 1 and "fitted on the row numbers" in err, err


@pytest.fixture
def models(tmp_path):
    sio = pytest.importorskip("skops.io", reason="the test extra installs skops")
    paths = {}
    paths["unfitted"] = str(tmp_path / "unfitted.skops")
    sio.dump(EMGaussianMixture(n_components=2), paths["unfitted"])
    three = EMGaussianMixture(n_components=2, random_state=0)
    three.fit(np.random.RandomState(0).normal(size=(30, 3)))
    paths["three columns"] = str(tmp_path / "three.skops")
    sio.dump(three, paths["three columns"])
    paths["a list"] = str(tmp_path / "list.skops")
    sio.dump([three], paths["a list"])
    paths["a, b"] = str(tmp_path / "ab.skops")
    two = EMGaussianMixture(n_components=2, random_state=0)
    sio.dump(two.fit(X_SAVED), paths["a, b"])
    named = EMGaussianMixture(n_components=2, random_state=0)
    paths["named"] = str(tmp_path / "named.skops")
    sio.dump(named.fit(pd.DataFrame(X_SAVED, columns=["a", "b"])), paths["named"])
    paths["other pipeline"] = str(tmp_path / "pipeline.skops")
    sio.dump(make_pipeline(MinMaxScaler(), two).fit(X_SAVED), paths["other pipeline"])
    paths["directory"] = str(tmp_path)
    paths["text"] = write(tmp_path / "text.csv", "a,b\n1,x\n2,y\n")
    paths["unclosed"] = write(tmp_path / "quote.csv", 'a,b\n1,2\n"3,4\n5,6\n')
    paths["data"] = write(tmp_path / "data.csv", _saved(X_SAVED))
    paths["no header"] = write(tmp_path / "nohead.csv", _saved(X_SAVED, header=None))
    paths["xy"] = write(tmp_path / "xy.csv", _saved(X_SAVED, header=("x", "y")))
    paths["weights"] = write(tmp_path / "w.csv", "a,b,w\n1,2,1\n3,4,\n5,6,2\n7,8,1\n")
    paths["negative"] = write(
        tmp_path / "neg.csv", "a,b,w\n1,2,1\n3,4,-2\n5,6,2\n7,8,1\n"
    )
    return paths


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["predict", "{unfitted}", "{data}"], "holds an unfitted EMGaussianMixture"),
        (["predict", "{a list}", "{data}"], "holds a list, not a skvi estimator"),
        (["predict", "{other pipeline}", "{data}"], "Pipeline that 'skvi fit --save"),
        (["predict", "{directory}", "{data}"], "it is a directory"),
        (["predict", "{three columns}", "{data}"], "fitted on 3; keep only"),
        (["predict", "{three columns}", "{no header}"], "no header row and 2 columns"),
        (["predict", "{data}", "{data}"], "not a model saved by skvi"),
        (["fit", "{directory}"], "is a directory, not a CSV file"),
        (["fit", "{data}", "--save", "{directory}"], "is a directory; name a file"),
        (["fit", "{unclosed}"], "line 3: 1 cell where the header has 2; every"),
        (["fit", "{unclosed}"], "a quote opened there is not closed"),
        (["predict", "{named}", "{text}"], "holds text, not numbers ('x' on line 2)."),
        (["predict", "{named}", "{xy}"], "has no column 'a'; its columns are x, y"),
        (["fit", "{data}", "--n-components", "1-100000000"], "100000000 fits"),
        (
            ["fit", "{data}", "--n-components", "1-300", "--covariance-type", "all"],
            "ask for 4200 fits",
        ),
        (["fit", "{data}", "--n-components", "1-50"], "more than the 40 rows"),
        (["fit", "{data}", "--n-components", "10000000000000000000000"], "at most 40"),
        (["fit", "{data}", "--columns", "a,a"], "--columns names 'a' twice"),
        (["fit", "{data}", "--columns", "a", "--weight-column", "a"], "also in"),
        (["fit", "{data}", "--encoding", "klingon"], "not an encoding Python knows"),
        (["fit", "{data}", "--delimiter", "ab"], "must be one character"),
        (["fit", "{data}", "--delimiter", ";"], "no numeric column to fit"),
        (["fit", "{data}", "--max-iter", "-3"], "-3 is negative"),
        (["fit", "{data}", "--tol", "nan"], "not a finite number >= 0"),
        (["fit", "{data}", "--random-state", "-1"], "not a seed"),
        (["fit", "{data}", "--n-jobs", "0"], "0 jobs"),
        (["fit", "{weights}", "--weight-column", "w"], "w.csv, line 3: the weight"),
        (["fit", "{negative}", "--weight-column", "w"], "neg.csv, line 3: the weigh"),
    ],
)
def test_more_mistakes_are_one_line_checked_before_any_fit(
    models, arguments, message, capsys
):
    status, out, err = run_cli(
        capsys, *(argument.format(**models) for argument in arguments)
    )
    assert status in (1, 2)  # 2: a malformed command line, as argparse does
    assert out == ""
    assert err.count("\n") == 1 and message in err, err


def test_predict_finds_the_columns_by_name_or_by_position(models, tmp_path, capsys):
    # A model fitted in Python on an array knows no names: position it is.
    status, _, err = run_cli(
        capsys, "predict", models["a, b"], models["no header"], "--output-dir", tmp_path
    )
    assert status == 0, err
    status, out, err = run_cli(
        capsys, "predict", models["a, b"], models["xy"], "--output-dir", tmp_path
    )
    assert status == 0, err
    # The file names its columns but the model does not: the output says
    # which column it took for which feature.
    assert "The model has no column names" in out
    assert "x, y are its features 1 to 2, in the file's order" in out


def test_warnings_are_one_line_too(tmp_path, capsys):
    lines = [f"{a},{b},1e-12" for a, b in X_SAVED]
    data = write(tmp_path / "w.csv", "a,b,w\n" + "\n".join(lines) + "\n")
    status, _, err = run_cli(
        capsys, "fit", data, "--method", "vi", "--weight-column", "w",
        "--output-dir", tmp_path,
    )  # fmt: skip
    assert status == 0, err
    warnings = err.splitlines()
    assert warnings and all(w.startswith("skvi fit: warning: ") for w in warnings)
