"""The command-line demo, as a new user runs it."""

import re
import subprocess
import sys

import numpy as np
import pytest

from skvi import VariationalGaussianMixture, exact_log_evidence
from skvi.__main__ import main


def test_demo_reports_both_estimators_and_draws_the_figure(tmp_path, capsys):
    figure = tmp_path / "demo.png"
    assert main(["demo", "--output", str(figure)]) == 0
    report = capsys.readouterr().out
    assert report.count("never-decreasing ELBO: True") == 2
    final_gap = float(re.search(r"final KL gap ([0-9.e+-]+)", report).group(1))
    assert 0 <= final_gap < 1e-9
    match = re.search(
        r"log p\(X\) = (-?[0-9.]+)\s+ELBO = (-?[0-9.]+)\s+gap KL\(q \|\| posterior\) "
        r"= ([0-9.]+) nats",
        report,
    )
    evidence, bound, gap = (float(g) for g in match.groups())
    assert bound < evidence
    assert gap == pytest.approx(evidence - bound, abs=2e-6)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size > 20_000


def test_demo_runs_as_a_module_without_a_figure():
    result = subprocess.run(
        [sys.executable, "-m", "skvi", "demo", "--no-plot"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "EMGaussianMixture" in result.stdout
    assert "VariationalGaussianMixture" in result.stdout
    assert "Figure written" not in result.stdout


def test_exact_log_evidence_refuses_what_it_cannot_do():
    X = np.array([[0.0], [0.1], [2.0], [2.2]])
    smoothed = VariationalGaussianMixture(n_components=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="reg_covar=0"):
        exact_log_evidence(smoothed, X)
    plain = VariationalGaussianMixture(n_components=3, reg_covar=0.0).fit(
        np.linspace(0, 1, 20)[:, None]
    )
    with pytest.raises(ValueError, match="3\\^20 assignments is too many"):
        exact_log_evidence(plain, np.linspace(0, 1, 20)[:, None])
