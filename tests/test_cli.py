"""The command line, run as a user runs it: ``python -m skvi`` in a subprocess."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from skvi import EMGaussianMixture, select_model
from skvi._table import read_table
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


def write(path, text):
    path.write_text(text)
    return str(path)


def test_fit_writes_labels_summary_figures_and_a_model(tmp_path):
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
        3, covariance_type="tied", init_params="hc", random_state=0
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

    predicted = skvi("predict", model_file, FAITHFUL, "--output-dir", str(out))
    assert predicted.returncode == 0, predicted.stderr
    predictions = read_table(str(out / "predictions.csv"))
    assert np.array_equal(predictions.values, labels.values)


def test_model_selection_prints_the_table_and_marks_the_choice(tmp_path):
    result = skvi(
        "fit", FAITHFUL, "--n-components", "1-4", "--covariance-type", "all",
        "--plot", "--n-jobs", "2", "--output-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table, best = select_model(
        load_old_faithful().data, range(1, 5), random_state=0, as_frame=False
    )
    rows = [line for line in result.stdout.splitlines() if line[2:12].strip()]
    marked = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("* ") and "chosen" not in line
    ]
    assert len(marked) == 1
    assert marked[0].split()[1:3] == [str(best.n_components), best.covariance_type]
    assert len(rows) >= 16
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["selection"]) == 16
    assert summary["parameters"]["n_components"] == best.n_components
    assert (tmp_path / "selection.png").read_bytes()[:4] == b"\x89PNG"


def test_vi_with_weights_columns_and_missing_cells(tmp_path):
    lines = ["a,b,label,count"]
    rng = np.random.RandomState(0)
    for i in range(120):
        a, b = rng.normal(size=2) + (4 * (i % 2))
        cell = "" if i % 10 == 0 else f"{b:.4f}"
        lines.append(f"{a:.4f},{cell},x{i % 2},{1 + i % 3}")
    data = write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    result = skvi(
        "fit", data, "--method", "vi", "--n-components", "3",
        "--weight-column", "count", "--verbose", "--output-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Iteration 1" in result.stdout and "ELBO -" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    # The text column is skipped, the weight column is not a feature.
    assert summary["columns"] == ["a", "b"]
    assert summary["estimator"] == "VariationalGaussianMixture"


def test_every_command_has_help_with_examples():
    for command in ("fit", "predict", "demo"):
        result = skvi(command, "--help")
        assert result.returncode == 0
        assert "examples:" in result.stdout


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
        (["fit", "{ragged}"], "data row 2: 1 cells"),
        (["fit", "{binary}"], "not a text"),
        (["fit", "{text}", "--columns", "a,b"], "Column 'b'"),
        (["fit", "{good}", "--columns", "eruptions,height"], "no column 'height'"),
        (["fit", "{good}", "--n-components", "9-1"], "not a number, a range"),
        (["fit", "{good}", "--n-components", "x"], "not a number, a range"),
        (["fit", "{good}", "--covariance-type", "round"], "'round' is not one"),
        (["fit", "{tiny}", "--n-components", "3"], "n_components = 3"),
        (["fit", "{good}", "--output-dir", "{a file}"], "output directory"),
        (["fit", "{good}", "--weight-column", "none"], "no column 'none'"),
        (["predict", "{not a model}", "{good}"], "not a model saved by skvi"),
        (["predict", "{pickle}", "{good}"], "not a model saved by skvi"),
        (["predict", "{missing}", "{good}"], "No such model file"),
        (["demo", "--output", "/no/such/dir/x.png"], "no such directory"),
        (["fit"], "required"),
        (["fit", "{good}", "--max-iter", "many"], "invalid int value"),
    ],
)
def test_errors_are_one_line_and_a_nonzero_status(files, arguments, message):
    result = skvi(*(argument.format(**files) for argument in arguments))
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_a_skops_file_of_another_model_is_refused(tmp_path):
    sio = pytest.importorskip("skops.io", reason="the test extra installs skops")
    from sklearn.mixture import GaussianMixture

    path = str(tmp_path / "sklearn.skops")
    sio.dump(GaussianMixture(2).fit(load_old_faithful().data), path)
    result = skvi("predict", path, FAITHFUL)
    assert result.returncode == 1
    assert "is not a skvi model" in result.stderr
