"""skvi's ``select_model`` side by side with R mclust's ``Mclust``.

On Old Faithful (``skvi.datasets.load_old_faithful``), iris (scikit-learn) and
some of mclust's own data sets (exported from R to CSV when the benchmark
runs), both libraries fit K = 1..9 with mclust's fourteen covariance models,
all else at their defaults:

* mclust: ``Mclust(X, G=1:9)``, which fits all fourteen models
  (``benchmarks/mclust_reference.R``);
* skvi: ``select_model(X, n_components=range(1, 10))``, whose default
  ``covariance_types='all'`` is the same fourteen.

``--models shared`` compares the four models scikit-learn has instead
(mclust's ``modelNames=c("VII","VVI","EEE","VVV")`` against skvi's
spherical, diag, tied, full), the comparison of earlier versions.

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
* EM steps of every model (skip with ``--no-steps``): for the fourteen
  models and K in ``--steps-k`` (1, 2, 3, 4), a second R run records
  mclust's fitted parameters, its parameter count and BIC, ONE ``mstep``
  applied to the ``estep`` of those parameters, and ``me`` run to
  convergence from the same ``estep`` (tight tolerances). skvi's
  ``EMGaussianMixture`` starts from the same parameters (``weights_init``,
  ``means_init``, ``precisions_init``; ``reg_covar=0``): after one
  iteration its weights, means and covariances must equal mclust's
  ``mstep`` to 1e-8 (relative to the largest entry), run to convergence
  (``tol=1e-13``) its log-likelihood must equal ``me``'s to 1e-6 (relative),
  and its parameter count and BIC (``bic()``, at mclust's log-likelihood)
  must equal mclust's ``nMclustParams`` and BIC. The report counts the
  cells that miss each target and shows the worst.
* Same partition (``--start mclust``, a diagnostic, not a like-for-like
  timing): every skvi fit starts from mclust's own initial partition for
  its K, ``hclass(hc(X), K)`` with mclust's default ``hc`` (model VVV on
  the scaled SVD coordinates; exported by a second R run, untimed), in
  place of skvi's tree. It separates the cells that differ by their start
  from those that differ by EM or its stopping rule. mclust's ``hcVVV``
  departs from the agglomeration criterion that skvi's tree follows
  exactly (see ``skvi/_agglomeration.py``), so the two trees can differ
  from a few clusters on.

Usage::

    python benchmarks/bench_mclust.py                  # all data sets, 3 rounds
    python benchmarks/bench_mclust.py --datasets faithful,iris --repeats 1
    python benchmarks/bench_mclust.py --datasets r-classics --no-steps --no-same-start
    python benchmarks/bench_mclust.py --output mclust.md
    python benchmarks/bench_mclust.py --skvi-params '{"tol": 1e-8, "max_iter": 10000}'
    python benchmarks/bench_mclust.py --models shared   # the four shared models
    python benchmarks/bench_mclust.py --start mclust    # from mclust's partitions
    python benchmarks/bench_mclust.py --repeats 0 --no-same-start  # steps only

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
# The skvi of this checkout, not an installed one: a script's folder, not
# the working directory, heads sys.path (the child inherits PYTHONPATH).
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])
)
sys.path.insert(0, str(HERE.parent))
R_SCRIPT = HERE / "mclust_reference.R"
# mclust's fourteen models, in its order; skvi takes the same names.
ALL_MODELS = (
    "EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
    "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)  # fmt: skip
# The four scikit-learn has, under its names (``--models shared``).
SHARED = {"VII": "spherical", "VVI": "diag", "EEE": "tied", "VVV": "full"}
MODEL_SETS = {"all": {name: name for name in ALL_MODELS}, "shared": SHARED}
K_RANGE = range(1, 10)
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Data sets of R's mclust package, exported at run time (numeric columns only).
MCLUST_DATASETS = ("diabetes", "banknote", "thyroid", "wreath")
DATASETS = ("faithful", "iris", *MCLUST_DATASETS)
# Also, not by default (about 6 minutes a round): mclust's wdbc (Wisconsin
# breast cancer, 569 x 30) without its ID column, each column standardized
# (divided by its n - 1 standard deviation, as R's scale()): unscaled, its
# variances span 1e-5 to 1e5 and neither program finishes in 25 minutes.
STANDARDIZED = {"wdbc-std": ("wdbc", ("ID",))}
# Also, not by default (``--datasets r-classics``, about a minute a round):
# small data sets people try first, mclust's EuroUnemployment and R's own
# (numeric columns, complete rows), where many cells are degenerate.
R_CLASSICS = (
    "EuroUnemployment", "women", "trees", "stackloss", "USArrests", "rock",
    "attitude", "swiss", "LifeCycleSavings", "state.x77", "airquality", "mtcars",
)  # fmt: skip
BIC_MARGIN = 2.0
SAME_START_TOL = 1e-6
STEP_K = (1, 2, 3, 4)
# The targets of the step comparison (issue 17).
ONE_STEP_TOL = 1e-8  # one EM step, relative to the largest entry
CONVERGED_TOL = 1e-6  # the converged log-likelihood, relative


def one_thread_environment():
    env = dict(os.environ)
    env.update({name: "1" for name in THREAD_VARIABLES})
    return env


# ------------------------------------------------------------------ child
def child(csv_path, out_path, params_json, models, partitions_path=None):
    """Time skvi's select_model on one CSV; write the table as JSON.

    With ``partitions_path`` (a CSV of mclust's initial partitions, one
    column per K) every fit's ``init_params='hc'`` start takes mclust's
    partition for its K instead of skvi's tree.
    """
    from threadpoolctl import threadpool_limits

    from skvi import select_model

    X = np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)
    if partitions_path is not None:
        use_partitions(np.loadtxt(partitions_path, delimiter=",", skiprows=1, ndmin=2))
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        table, best = select_model(
            X,
            n_components=K_RANGE,
            covariance_types=list(MODEL_SETS[models].values()),
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


def use_partitions(partitions):
    """Make skvi's "hc" start return mclust's partition for each K.

    ``partitions[:, K - 1]`` holds mclust's labels (1..K) of every row.
    skvi's start takes its labels from ``skvi._initialization.hc_labels``;
    the diagnostic replaces that one function in this child process.
    """
    import skvi._initialization as initialization

    labels = partitions.astype(np.intp) - 1
    tree_labels = initialization.hc_labels

    def mclust_labels(X, sample_weight, n_clusters, random_state, criterion="vvv"):
        # Ward's tree (criterion "ward", second_start) is not mclust's hc.
        if criterion != "vvv":
            return tree_labels(X, sample_weight, n_clusters, random_state, criterion)
        if X.shape[0] != labels.shape[0] or n_clusters > labels.shape[1]:
            raise ValueError("mclust's partitions do not fit these rows.")
        return labels[:, n_clusters - 1]

    initialization.hc_labels = mclust_labels


# ------------------------------------------------------------------ driver
def run_r(*args):
    subprocess.run(
        ["Rscript", str(R_SCRIPT), *map(str, args)],
        check=True,
        env=one_thread_environment(),
        stdout=subprocess.DEVNULL,
    )


def run_mclust(csv_path, out_path, models, params=False):
    names = "all" if models == "all" else ",".join(MODEL_SETS[models])
    run_r("fit", csv_path, out_path, names, *(["--params"] if params else []))
    return json.loads(Path(out_path).read_text())


def run_skvi(csv_path, out_path, params_json, models, partitions=None):
    subprocess.run(
        [sys.executable, __file__, "--child", str(csv_path), str(out_path)]
        + ["--skvi-params", params_json, "--models", models]
        + ([] if partitions is None else ["--partitions", str(partitions)]),
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
        elif name in STANDARDIZED:
            source, dropped = STANDARDIZED[name]
            run_r("export", source, path)
            with open(path) as file:
                columns = [c.strip('"') for c in file.readline().strip().split(",")]
            data = np.loadtxt(path, delimiter=",", skiprows=1)
            kept = [i for i, column in enumerate(columns) if column not in dropped]
            data = data[:, kept]
            data = (data - data.mean(axis=0)) / data.std(axis=0, ddof=1)
            header = ",".join(f'"{columns[i]}"' for i in kept)
            np.savetxt(path, data, delimiter=",", header=header, comments="")
            paths[name] = path
            continue
        else:
            run_r("export", name, path)
            paths[name] = path
            continue
        header = ",".join(f'"{column}"' for column in bunch.feature_names)
        np.savetxt(path, bunch.data, delimiter=",", header=header, comments="")
        paths[name] = path
    return paths


def compare(mclust, skvi, models):
    """Cell-by-cell BIC comparison (skvi's sign: smaller is better)."""
    names = MODEL_SETS[models]
    theirs = {(names[c["model"]], c["G"]): c["bic"] for c in mclust["cells"]}
    ours = {(c["covariance_type"], c["K"]): c["bic"] for c in skvi["cells"]}
    differences = []
    missing = {"mclust": 0, "skvi": 0}
    for cell, value in theirs.items():
        # skvi's NA: an error (None) or a degenerate fit (NaN criteria).
        mine = (
            ours[cell] if ours[cell] is not None and np.isfinite(ours[cell]) else None
        )
        if value is None:
            missing["mclust"] += 1
        if mine is None:
            missing["skvi"] += 1
        if value is not None and mine is not None:
            differences.append((mine - value, cell))
    worst = max(differences)
    # The quality target: mclust's pick, or a strictly better BIC (skvi's
    # table never ranks a degenerate fit).
    same_pick = (names[mclust["pick"]["model"]], mclust["pick"]["G"]) == (
        skvi["pick"]["covariance_type"],
        skvi["pick"]["K"],
    )
    return {
        "pick_ok": same_pick or skvi["pick"]["bic"] < mclust["pick"]["bic"],
        "skvi_worse": sum(d > BIC_MARGIN for d, _ in differences),
        "worse_cells": sorted(
            ((d, cell) for d, cell in differences if d > BIC_MARGIN), reverse=True
        ),
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


def cell_parameters(cell, n_features):
    """mclust's pro, mean and sigma of a cell as weights, means, covariances."""
    weights = np.atleast_1d(np.asarray(cell["pro"], dtype=float))
    means = np.asarray(cell["mean"], dtype=float).reshape(cell["G"], -1)
    sigma = np.asarray(cell["sigma"], dtype=float).reshape(
        cell["G"], n_features, n_features
    )
    return weights, means, sigma


def skvi_precisions(kind, sigma):
    """``precisions_init`` for skvi's covariance type from mclust's sigma."""
    if kind == "spherical":
        return 1.0 / sigma[:, 0, 0]
    if kind == "diag":
        return 1.0 / np.diagonal(sigma, axis1=1, axis2=2)
    if kind == "tied":
        return np.linalg.inv(sigma[0])
    # 'full' and mclust's fourteen names: one full matrix per component.
    return np.linalg.inv(sigma)


def same_start(X, mclust, models):
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
        kind = MODEL_SETS[models][cell["model"]]
        weights, means, sigma = cell_parameters(cell, X.shape[1])
        precisions = skvi_precisions(kind, sigma)
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


def run_steps(csv_path, out_path, counts):
    run_r("steps", csv_path, out_path, ",".join(map(str, counts)))
    return json.loads(Path(out_path).read_text())


def largest_relative_error(ours, theirs):
    """max |ours - theirs| over max |theirs|, over several arrays."""
    return max(
        float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-300))
        for a, b in zip(ours, theirs, strict=True)
    )


def expected_complete_loglik(X, resp, weights, means, covariances):
    """The M-step's objective: sum_nk r_nk (log pi_k + log N(x_n | mu_k, S_k))."""
    return float(np.sum(resp * component_logs(X, weights, means, covariances)))


def component_logs(X, weights, means, covariances):
    from scipy.stats import multivariate_normal

    return np.column_stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(X)
            for w, m, c in zip(weights, means, covariances, strict=True)
        ]
    )


def responsibilities(X, weights, means, covariances):
    from scipy.special import logsumexp

    log = component_logs(X, weights, means, covariances)
    return np.exp(log - logsumexp(log, axis=1, keepdims=True))


def em_steps(X, steps):
    """skvi's EM steps against mclust's ``mstep`` and ``me``, cell by cell.

    Returns one dict per cell mclust fitted: the model, K, the largest
    relative error of skvi's first EM step (weights, means, covariances)
    against ``mstep``'s, skvi's converged log-likelihood minus ``me``'s
    (relative), skvi's and mclust's parameter counts, and skvi's BIC at
    mclust's log-likelihood minus mclust's BIC (relative). Where the first
    steps differ by more than the target, also the M-step's objective (the
    expected complete log-likelihood under the E-step both start from) at
    skvi's step minus at mclust's: positive where skvi's M-step maximised
    it better.
    """
    from skvi import EMGaussianMixture

    n, d = X.shape
    rows = []
    for cell in steps["cells"]:
        if cell["bic"] is None:
            continue
        weights, means, sigma = cell_parameters(cell, d)
        start = dict(
            n_components=cell["G"],
            covariance_type=cell["model"],
            weights_init=weights / weights.sum(),
            means_init=means,
            precisions_init=np.linalg.inv(sigma),
            reg_covar=0.0,
        )
        row = {"model": cell["model"], "G": cell["G"], "mclust_npar": cell["npar"]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = EMGaussianMixture(**start, max_iter=1, tol=1e-300).fit(X)
            run = EMGaussianMixture(**start, max_iter=20_000, tol=1e-13).fit(X)
        loglik = one.score(X) * n
        row["npar"] = (one.bic(X) + 2.0 * loglik) / np.log(n)
        skvi_bic = -2.0 * cell["loglik"] + round(row["npar"]) * np.log(n)
        row["bic"] = (skvi_bic - cell["bic"]) / abs(cell["bic"])
        if "one_step" in cell:
            theirs = cell_parameters(cell["one_step"] | {"G": cell["G"]}, d)
            ours = (one.weights_, one.means_, one.covariances_)
            row["one_step"] = largest_relative_error(ours, theirs)
            if row["one_step"] > ONE_STEP_TOL:
                resp = responsibilities(X, weights / weights.sum(), means, sigma)
                row["objective"] = expected_complete_loglik(
                    X, resp, *ours
                ) - expected_complete_loglik(X, resp, *theirs)
        if "me" in cell:
            mclust_loglik = cell["me"]["loglik"]
            row["converged"] = (run.score(X) * n - mclust_loglik) / abs(mclust_loglik)
            row["n_iter"] = (
                int(run.n_iter_),
                int(np.ravel(cell["me"]["iterations"])[0]),
            )
        rows.append(row)
    return rows


def steps_report(step_rows):
    """Markdown lines of the step comparison, one table row per data set."""
    lines = [
        "",
        "## EM steps of the fourteen models, from mclust's parameters",
        "",
        "Per cell (model, K) mclust fitted: skvi's first EM step against "
        f"mclust's `mstep` (largest relative error; target {ONE_STEP_TOL:g}), "
        "skvi's converged log-likelihood minus `me`'s (relative; target "
        f"{CONVERGED_TOL:g}), parameter counts (skvi's from `bic()`) and BIC "
        "(skvi's formula at mclust's log-likelihood, relative).",
        "",
        "| data | cells | one step: max | > target | converged: max abs "
        "| > target | npar differ | BIC: max abs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    misses = []
    for name, rows in step_rows:
        one = [r["one_step"] for r in rows if "one_step" in r]
        conv = [r["converged"] for r in rows if "converged" in r]
        npar = [r for r in rows if round(r["npar"]) != r["mclust_npar"]]
        lines.append(
            f"| {name} | {len(rows)} | {max(one, default=0):.1e} "
            f"| {sum(e > ONE_STEP_TOL for e in one)} "
            f"| {max(map(abs, conv), default=0):.1e} "
            f"| {sum(abs(e) > CONVERGED_TOL for e in conv)} | {len(npar)} "
            f"| {max(abs(r['bic']) for r in rows):.1e} |"
        )
        for r in rows:
            bad = []
            if r.get("one_step", 0) > ONE_STEP_TOL:
                bad.append(
                    f"one step {r['one_step']:.1e} (M-step objective skvi - "
                    f"mclust {r['objective']:+.2e} nats)"
                )
            if abs(r.get("converged", 0)) > CONVERGED_TOL:
                bad.append(
                    f"converged {r['converged']:+.1e} (iterations skvi, mclust: "
                    f"{r['n_iter'][0]}, {r['n_iter'][1]})"
                )
            if round(r["npar"]) != r["mclust_npar"]:
                bad.append(f"npar {r['npar']:.2f} vs {r['mclust_npar']}")
            if bad:
                misses.append(f"- {name} {r['model']}, {r['G']}: {'; '.join(bad)}")
    if misses:
        lines += ["", "Cells that miss a target:", "", *misses]
    return lines


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
    parser.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help=f"comma-separated; also {', '.join(STANDARDIZED)}, r-classics "
        f"({', '.join(R_CLASSICS)}) or any numeric data set of R's mclust or "
        "datasets packages",
    )
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
    parser.add_argument(
        "--models",
        choices=tuple(MODEL_SETS),
        default="all",
        help="all: mclust's fourteen models (Mclust's default); shared: the "
        "four scikit-learn has",
    )
    parser.add_argument(
        "--no-steps", action="store_true", help="skip the EM step comparison"
    )
    parser.add_argument(
        "--steps-k",
        default=",".join(map(str, STEP_K)),
        help="numbers of components of the EM step comparison",
    )
    parser.add_argument(
        "--start",
        choices=("skvi", "mclust"),
        default="skvi",
        help="skvi: select_model's own start; mclust: every skvi fit starts "
        "from mclust's initial partition for its K (a diagnostic)",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--partitions", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.skvi_params, args.models, args.partitions)
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
    if "r-classics" in names:
        at = names.index("r-classics")
        names[at : at + 1] = R_CLASSICS
    report = ["## Machine", "", *machine_lines()]
    started = time.perf_counter()
    rows, same_rows, step_rows = [], [], []
    versions = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths = write_datasets(names, folder)
        for name in names:
            partitions = None
            if args.start == "mclust":
                partitions = folder / f"{name}-hclass.csv"
                run_r("hclass", paths[name], partitions, max(K_RANGE))
            times = {"mclust": [], "skvi": []}
            results = {"mclust": [], "skvi": []}
            for round_ in range(args.repeats):
                order = ("mclust", "skvi") if round_ % 2 == 0 else ("skvi", "mclust")
                for library in order:
                    out = folder / f"{name}-{library}-{round_}.json"
                    if library == "mclust":
                        result = run_mclust(paths[name], out, args.models)
                    else:
                        result = run_skvi(
                            paths[name], out, args.skvi_params, args.models, partitions
                        )
                    times[library].append(result["seconds"])
                    results[library].append(result)
            X = np.loadtxt(paths[name], delimiter=",", skiprows=1, ndmin=2)
            if not args.no_steps:
                counts = [int(k) for k in args.steps_k.split(",")]
                steps = run_steps(paths[name], folder / f"{name}-steps.json", counts)
                versions = versions or steps
                step_rows.append((name, em_steps(X, steps)))
            if not args.repeats:
                continue
            mclust, skvi_ = results["mclust"][0], results["skvi"][0]
            versions = mclust
            # Are the repeats the same fits? (Largest BIC spread, each side.)
            spread = {library: bic_spread(runs) for library, runs in results.items()}
            comparison = compare(mclust, skvi_, args.models)
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
                    paths[name], folder / f"{name}-params.json", args.models, True
                )
                same_rows.append((name, *same_start(X, params, args.models)))

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
        f"models: {args.models}; select_model's further parameters: "
        f"{args.skvi_params}; skvi's start: "
        + (
            "mclust's initial partitions (hclass of its hc tree)."
            if args.start == "mclust"
            else "its own."
        ),
        "",
        "| data | n x d | mclust pick | mclust BIC | skvi pick | skvi BIC "
        "| skvi worse > 2 | mclust worse > 2 | worst skvi - mclust "
        "| pick ok | mclust s | skvi s | skvi / mclust |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, mclust, skvi_, comparison, median, _ in rows:
        worst, (kind, k) = comparison["worst"]
        missing = comparison["missing"]
        note = ""
        if missing["mclust"] or missing["skvi"]:
            note = f" (NA: mclust {missing['mclust']}, skvi {missing['skvi']})"
        pick_kind = MODEL_SETS[args.models][mclust["pick"]["model"]]
        report.append(
            f"| {name} | {mclust['n']} x {mclust['d']} "
            f"| {mclust['pick']['model']} ({pick_kind}), {mclust['pick']['G']} "
            f"| {mclust['pick']['bic']:.2f} "
            f"| {skvi_['pick']['covariance_type']}, {skvi_['pick']['K']} "
            f"| {skvi_['pick']['bic']:.2f} "
            f"| {comparison['skvi_worse']} / {comparison['cells']}{note} "
            f"| {comparison['mclust_worse']} "
            f"| {worst:+.2f} ({kind}, {k}) "
            f"| {'yes' if comparison['pick_ok'] else 'NO'} "
            f"| {median['mclust']:.3f} | {median['skvi']:.3f} "
            f"| {median['skvi'] / median['mclust']:.1f}x |"
        )
    for name, _, _, comparison, _, _ in rows:
        if comparison["worse_cells"]:
            report.append(
                f"- {name}, cells where skvi is worse by more than "
                f"{BIC_MARGIN:g}: "
                + ", ".join(
                    f"{kind} {k} {d:+.1f}" for d, (kind, k) in comparison["worse_cells"]
                )
            )
    totals = [sum(row[3][key] for row in rows) for key in ("skvi_worse", "cells")]
    speed = [row[4]["skvi"] / row[4]["mclust"] for row in rows]
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
    if speed:
        report.append(
            f"skvi / mclust time: {min(speed):.2f}x to {max(speed):.2f}x "
            f"(faster than mclust on {sum(x < 1 for x in speed)} of {len(speed)})."
        )
    if step_rows:
        report += steps_report(step_rows)
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
