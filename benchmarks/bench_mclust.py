"""skvi's ``select_model`` side by side with R mclust's ``Mclust``.

On Old Faithful (``skvi.datasets.load_old_faithful``), iris (scikit-learn) and
some of mclust's own data sets (exported from R to CSV when the benchmark
runs), both libraries fit K = 1..9 with the four covariance models they share
(mclust's VII, VVI, EEE, VVV = skvi's spherical, diag, tied, full), all else
at their defaults:

* mclust: ``Mclust(X, G=1:9, modelNames=c("VII","VVI","EEE","VVV"))``
  (``benchmarks/mclust_reference.R``);
* skvi: ``select_model(X, n_components=range(1, 10),
  covariance_types=["spherical", "diag", "tied", "full"])``.

Method
------
* Both read the same CSV file. Every timed call runs in its own fresh process
  (``Rscript`` or this script with ``--child``) with one BLAS / OpenMP thread;
  the clock covers the ``Mclust`` call alone (R's ``system.time``, elapsed)
  and the ``select_model`` call alone (``time.perf_counter``), with no
  warm-up call on either side: what a user's first call costs once the
  library is loaded.
* ``--repeats`` (3) rounds per data set, mclust and skvi alternating and
  which one goes first switching every round; times are medians.
* BIC in skvi's sign: -2 logL + npar log n, smaller is better (mclust reports
  2 logL - npar log n, larger is better; the R script negates it). A cell is
  one (model, K). "skvi worse" counts the cells where skvi's BIC exceeds
  mclust's by more than 2, "mclust worse" the reverse; the worst difference
  is the largest skvi - mclust (positive: skvi worse). Cells that one side
  could not fit (mclust's NA, an error in skvi's table) are counted apart.
* Same start, same answer (skip with ``--no-same-start``): for every cell
  mclust fitted (its parameters written by a second, untimed R run), (a) the
  log-likelihood at mclust's parameters computed here with SciPy, against
  the one mclust reports; (b) skvi's ``EMGaussianMixture`` started from
  those weights, means and precisions (``reg_covar=0``): its bound before
  any step, against SciPy's; (c) the same start run to ``tol=1e-6`` with
  skvi's defaults otherwise: its log-likelihood against mclust's. All are
  total log-likelihoods in nats.

Usage::

    python benchmarks/bench_mclust.py                  # all data sets, 3 rounds
    python benchmarks/bench_mclust.py --datasets faithful,iris --repeats 1
    python benchmarks/bench_mclust.py --output mclust.md
    python benchmarks/bench_mclust.py --skvi-params '{"tol": 1e-8, "max_iter": 10000}'

Without ``Rscript`` (or without R's mclust package) the script says so and
exits with status 0; the unit tests never need R.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE / "mclust_reference.R"
MODELS = {"VII": "spherical", "VVI": "diag", "EEE": "tied", "VVV": "full"}
K_RANGE = range(1, 10)
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Data sets of R's mclust package, exported at run time (numeric columns only).
MCLUST_DATASETS = ("diabetes", "banknote", "thyroid", "wreath")
DATASETS = ("faithful", "iris", *MCLUST_DATASETS)
BIC_MARGIN = 2.0
SAME_START_TOL = 1e-6


def one_thread_environment():
    env = dict(os.environ)
    env.update({name: "1" for name in THREAD_VARIABLES})
    return env


# ------------------------------------------------------------------ child
def child(csv_path, out_path, params_json):
    """Time skvi's select_model on one CSV; write the table as JSON."""
    from threadpoolctl import threadpool_limits

    from skvi import select_model

    X = np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        table, best = select_model(
            X,
            n_components=K_RANGE,
            covariance_types=list(MODELS.values()),
            as_frame=False,
            **json.loads(params_json),
        )
        seconds = time.perf_counter() - start
    cells = [
        {
            "covariance_type": row["covariance_type"],
            "K": int(row["n_components"]),
            "bic": None if row["error"] else float(row["bic"]),
        }
        for row in table
    ]
    pick = next(row for row in table if row["chosen"])
    Path(out_path).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cells": cells,
                "pick": {
                    "covariance_type": best.covariance_type,
                    "K": best.n_components,
                    "bic": float(pick["bic"]),
                },
            }
        )
    )


# ------------------------------------------------------------------ driver
def run_r(*args):
    subprocess.run(
        ["Rscript", str(R_SCRIPT), *map(str, args)],
        check=True,
        env=one_thread_environment(),
        stdout=subprocess.DEVNULL,
    )


def run_mclust(csv_path, out_path, params=False):
    run_r("fit", csv_path, out_path, *(["--params"] if params else []))
    return json.loads(Path(out_path).read_text())


def run_skvi(csv_path, out_path, params_json):
    subprocess.run(
        [sys.executable, __file__, "--child", str(csv_path), str(out_path)]
        + ["--skvi-params", params_json],
        check=True,
        env=one_thread_environment(),
    )
    return json.loads(Path(out_path).read_text())


def write_datasets(names, folder):
    """One CSV per data set, header row and numeric columns only."""
    from sklearn.datasets import load_iris

    from skvi.datasets import load_old_faithful

    paths = {}
    for name in names:
        path = folder / f"{name}.csv"
        if name == "faithful":
            bunch = load_old_faithful()
        elif name == "iris":
            bunch = load_iris()
        else:
            run_r("export", name, path)
            paths[name] = path
            continue
        header = ",".join(f'"{column}"' for column in bunch.feature_names)
        np.savetxt(path, bunch.data, delimiter=",", header=header, comments="")
        paths[name] = path
    return paths


def compare(mclust, skvi):
    """Cell-by-cell BIC comparison (skvi's sign: smaller is better)."""
    theirs = {(MODELS[c["model"]], c["G"]): c["bic"] for c in mclust["cells"]}
    ours = {(c["covariance_type"], c["K"]): c["bic"] for c in skvi["cells"]}
    differences = []
    missing = {"mclust": 0, "skvi": 0}
    for cell, value in theirs.items():
        if value is None:
            missing["mclust"] += 1
        if ours[cell] is None:
            missing["skvi"] += 1
        if value is not None and ours[cell] is not None:
            differences.append((ours[cell] - value, cell))
    worst = max(differences)
    return {
        "skvi_worse": sum(d > BIC_MARGIN for d, _ in differences),
        "mclust_worse": sum(d < -BIC_MARGIN for d, _ in differences),
        "worst": worst,
        "cells": len(differences),
        "missing": missing,
    }


def bic_spread(runs):
    """Largest BIC difference of a cell between rounds: are they one fit?"""
    first = [cell["bic"] for cell in runs[0]["cells"]]
    return max(
        (
            abs(a - b)
            for run in runs[1:]
            for a, b in zip(first, [c["bic"] for c in run["cells"]], strict=True)
            if a is not None and b is not None
        ),
        default=0.0,
    )


def mixture_loglik(X, weights, means, covariances):
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    columns = [
        np.log(w) + multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(weights, means, covariances, strict=True)
    ]
    return float(logsumexp(np.column_stack(columns), axis=1).sum())


def same_start(X, mclust):
    """skvi from mclust's fitted parameters, cell by cell (total nats).

    Returns three arrays over the cells mclust fitted: the log-likelihood
    at mclust's parameters computed here with SciPy minus the one mclust
    reports; skvi's (unsmoothed, ``reg_covar=0``) bound at those parameters
    before any step, ``n * lower_bounds_[0]``, minus SciPy's; and skvi's
    log-likelihood after it converged from them (defaults, ``tol=1e-6``)
    minus mclust's.
    """
    from sklearn.exceptions import ConvergenceWarning

    from skvi import EMGaussianMixture

    reported, evaluated, converged = [], [], []
    for cell in mclust["cells"]:
        if cell["bic"] is None:
            continue
        kind = MODELS[cell["model"]]
        weights = np.atleast_1d(np.asarray(cell["pro"], dtype=float))
        means = np.asarray(cell["mean"], dtype=float).reshape(cell["G"], -1)
        sigma = np.asarray(cell["sigma"], dtype=float).reshape(
            cell["G"], X.shape[1], X.shape[1]
        )
        if kind == "spherical":
            precisions = 1.0 / sigma[:, 0, 0]
        elif kind == "diag":
            precisions = 1.0 / np.diagonal(sigma, axis1=1, axis2=2)
        elif kind == "tied":
            precisions = np.linalg.inv(sigma[0])
        else:
            precisions = np.linalg.inv(sigma)
        scipy_loglik = mixture_loglik(X, weights, means, sigma)
        reported.append(scipy_loglik - cell["loglik"])
        start = dict(
            n_components=cell["G"],
            covariance_type=kind,
            weights_init=weights / weights.sum(),
            means_init=means,
            precisions_init=precisions,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            first = EMGaussianMixture(**start, reg_covar=0.0, max_iter=1).fit(X)
            model = EMGaussianMixture(**start, tol=SAME_START_TOL, max_iter=10_000).fit(
                X
            )
        evaluated.append(first.lower_bounds_[0] * X.shape[0] - scipy_loglik)
        converged.append(model.score(X) * X.shape[0] - cell["loglik"])
    return np.array(reported), np.array(evaluated), np.array(converged)


def machine_lines():
    import scipy
    import sklearn

    import skvi

    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in file
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    return [
        f"- {platform.platform()}, {cpu}, os.cpu_count() = {os.cpu_count()}",
        f"- load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, "
        f"skvi {getattr(skvi, '__version__', '?')}",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", help="also write the report (markdown) here")
    parser.add_argument(
        "--no-same-start", action="store_true", help="skip the same-start check"
    )
    parser.add_argument(
        "--skvi-params",
        default="{}",
        help="further select_model parameters as JSON, e.g. '{\"tol\": 1e-8}'",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.skvi_params)
        return 0
    if shutil.which("Rscript") is None:
        print("bench_mclust: Rscript not found; install R and its mclust package")
        print("(Debian: apt-get install -y r-cran-mclust). Nothing measured.")
        return 0
    probe = subprocess.run(
        ["Rscript", "-e", 'quit(status = !requireNamespace("mclust", quietly=TRUE))'],
        capture_output=True,
    )
    if probe.returncode != 0:
        print("bench_mclust: R's mclust package is not installed")
        print("(Debian: apt-get install -y r-cran-mclust). Nothing measured.")
        return 0

    names = [name for name in args.datasets.split(",") if name]
    report = ["## Machine", "", *machine_lines()]
    started = time.perf_counter()
    rows, same_rows = [], []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths = write_datasets(names, folder)
        for name in names:
            times = {"mclust": [], "skvi": []}
            results = {"mclust": [], "skvi": []}
            for round_ in range(args.repeats):
                order = ("mclust", "skvi") if round_ % 2 == 0 else ("skvi", "mclust")
                for library in order:
                    out = folder / f"{name}-{library}-{round_}.json"
                    if library == "mclust":
                        result = run_mclust(paths[name], out)
                    else:
                        result = run_skvi(paths[name], out, args.skvi_params)
                    times[library].append(result["seconds"])
                    results[library].append(result)
            mclust, skvi_ = results["mclust"][0], results["skvi"][0]
            # Are the repeats the same fits? (Largest BIC spread, each side.)
            spread = {library: bic_spread(runs) for library, runs in results.items()}
            comparison = compare(mclust, skvi_)
            median = {library: statistics.median(t) for library, t in times.items()}
            rows.append((name, mclust, skvi_, comparison, median, spread))
            print(
                f"{name}: mclust {mclust['pick']['model']},{mclust['pick']['G']} "
                f"skvi {skvi_['pick']['covariance_type']},{skvi_['pick']['K']} "
                f"skvi worse in {comparison['skvi_worse']} cells, "
                f"{median['mclust']:.2f} s vs {median['skvi']:.2f} s",
                flush=True,
            )
            if not args.no_same_start:
                params = run_mclust(
                    paths[name], folder / f"{name}-params.json", params=True
                )
                X = np.loadtxt(paths[name], delimiter=",", skiprows=1, ndmin=2)
                same_rows.append((name, *same_start(X, params)))
        versions = results["mclust"][0] if names else {}

    report += [
        f"- {versions.get('r_version', '?')}, mclust "
        f"{versions.get('mclust_version', '?')}, R's BLAS {versions.get('blas', '?')}",
        "- one BLAS / OpenMP thread on both sides; "
        f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "## Results",
        "",
        f"{args.repeats} rounds per data set, medians; BIC in skvi's sign "
        "(smaller is better); cells: (model, K) fitted by both; "
        f"select_model's further parameters: {args.skvi_params}.",
        "",
        "| data | n x d | mclust pick | mclust BIC | skvi pick | skvi BIC "
        "| skvi worse > 2 | mclust worse > 2 | worst skvi - mclust "
        "| mclust s | skvi s | skvi / mclust |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, mclust, skvi_, comparison, median, _ in rows:
        worst, (kind, k) = comparison["worst"]
        missing = comparison["missing"]
        note = ""
        if missing["mclust"] or missing["skvi"]:
            note = f" (NA: mclust {missing['mclust']}, skvi {missing['skvi']})"
        pick_kind = MODELS[mclust["pick"]["model"]]
        report.append(
            f"| {name} | {mclust['n']} x {mclust['d']} "
            f"| {mclust['pick']['model']} ({pick_kind}), {mclust['pick']['G']} "
            f"| {mclust['pick']['bic']:.2f} "
            f"| {skvi_['pick']['covariance_type']}, {skvi_['pick']['K']} "
            f"| {skvi_['pick']['bic']:.2f} "
            f"| {comparison['skvi_worse']} / {comparison['cells']}{note} "
            f"| {comparison['mclust_worse']} "
            f"| {worst:+.2f} ({kind}, {k}) "
            f"| {median['mclust']:.3f} | {median['skvi']:.3f} "
            f"| {median['skvi'] / median['mclust']:.1f}x |"
        )
    totals = [sum(row[3][key] for row in rows) for key in ("skvi_worse", "cells")]
    report += [
        "",
        f"skvi worse by more than 2 in {totals[0]} of {totals[1]} cells; "
        "largest BIC spread between rounds: "
        + ", ".join(
            f"{name} mclust {spread['mclust']:.2g} skvi {spread['skvi']:.2g}"
            for name, *_, spread in rows
        )
        + ".",
    ]
    if same_rows:
        report += [
            "",
            "## Same start, same answer",
            "",
            "Per cell mclust fitted, total log-likelihood differences in nats: "
            "(a) at mclust's parameters, SciPy's value minus the one mclust "
            "reports; (b) skvi's (``reg_covar=0``) at the same parameters before "
            "any step minus SciPy's; (c) skvi's after converging from them "
            f"(defaults, tol={SAME_START_TOL:g}) minus mclust's; cells where "
            "(c) exceeds 0.1.",
            "",
            "| data | cells | (a) max abs | (b) max abs | (c) min | (c) max "
            "| (c) > 0.1 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, reported, evaluated, converged in same_rows:
            report.append(
                f"| {name} | {len(converged)} | {np.abs(reported).max():.2e} "
                f"| {np.abs(evaluated).max():.2e} | {converged.min():+.2e} "
                f"| {converged.max():+.2e} | {int(np.sum(converged > 0.1))} |"
            )
    report += ["", f"Total time: {time.perf_counter() - started:.0f} s."]
    text = "\n".join(report)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
