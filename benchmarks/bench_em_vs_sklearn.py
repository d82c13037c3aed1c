"""Time and memory of ``skvi.EMGaussianMixture`` next to scikit-learn's.

Both estimators are fitted in this one process, on the same arrays, with the
same settings (``n_components``, ``covariance_type``, ``init_params``,
``random_state``, ``max_iter`` and ``tol=0``, so that both run exactly
``max_iter`` EM iterations). For every case the two libraries alternate,
the best wall-clock time of at least ``--repeats`` fits is kept (fits of a
few milliseconds are repeated for at least ``--min-time`` seconds), and the
peak memory allocated during ``fit`` is measured with :mod:`tracemalloc` in a
separate, untimed fit (numpy reports its array buffers to tracemalloc).

Results are quoted as ratios, scikit-learn / skvi, so that a ratio above 1
means skvi is faster (time) or allocates less (memory).

Usage::

    python benchmarks/bench_em_vs_sklearn.py                # full run
    python benchmarks/bench_em_vs_sklearn.py --quick        # smoke test
    python benchmarks/bench_em_vs_sklearn.py --threads 1 --output table.md

See ``benchmarks/README.md`` for how to read the output.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
import warnings
from dataclasses import dataclass

import numpy as np
import scipy
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_info, threadpool_limits

import skvi
from skvi import EMGaussianMixture
from skvi.datasets import load_old_faithful

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
DTYPES = (np.float64, np.float32)
LIBRARIES = {"skvi": EMGaussianMixture, "sklearn": GaussianMixture}
MAX_REPEATS = 50


@dataclass(frozen=True)
class Case:
    """One data set: a name, its array (float64) and the mixture size."""

    name: str
    X: np.ndarray
    n_components: int

    @property
    def label(self):
        n, d = self.X.shape
        return f"{self.name} (n={n:_}, D={d}, K={self.n_components})"


@dataclass
class Result:
    """Measurements of one case, covariance type and dtype."""

    case: Case
    covariance_type: str
    dtype: type
    seconds: dict
    peak_bytes: dict
    mean_loglik: dict
    repeats: int

    @property
    def speed_ratio(self):
        return self.seconds["sklearn"] / self.seconds["skvi"]

    @property
    def memory_ratio(self):
        return self.peak_bytes["sklearn"] / self.peak_bytes["skvi"]


def make_blobs(n_samples, n_features, n_components, seed):
    """Well separated Gaussian clusters with random axis-aligned spreads."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(n_components, n_features))
    scales = rng.uniform(0.5, 1.5, size=(n_components, n_features))
    labels = rng.integers(n_components, size=n_samples)
    noise = rng.standard_normal((n_samples, n_features))
    return centers[labels] + scales[labels] * noise


def build_cases(quick):
    cases = [
        Case("Old Faithful", load_old_faithful(return_X_y=True), 2),
        Case("blobs", make_blobs(10_000, 10, 10, seed=0), 10),
    ]
    if not quick:
        cases.append(Case("blobs", make_blobs(200_000, 10, 10, seed=1), 10))
    return cases


def make_estimator(library, case, covariance_type, args):
    return LIBRARIES[library](
        n_components=case.n_components,
        covariance_type=covariance_type,
        init_params=args.init_params,
        random_state=args.random_state,
        max_iter=args.max_iter,
        tol=0.0,
    )


def timed_fit(estimator, X):
    gc.collect()
    start = time.perf_counter()
    estimator.fit(X)
    return time.perf_counter() - start


def peak_fit_bytes(estimator, X):
    """Peak bytes allocated (above what was live before) while fitting."""
    gc.collect()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        estimator.fit(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - baseline


def measure(case, covariance_type, dtype, args):
    X = np.ascontiguousarray(case.X, dtype=dtype)
    seconds = {name: np.inf for name in LIBRARIES}
    spent = {name: 0.0 for name in LIBRARIES}
    fitted = {}
    order = list(LIBRARIES)
    repeat = 0
    # At least --repeats fits each; fast fits are repeated until each library
    # has spent --min-time seconds (at most MAX_REPEATS fits), so that the
    # best time of a few-millisecond fit is not one noisy sample.
    while repeat < args.repeats or (
        repeat < MAX_REPEATS and min(spent.values()) < args.min_time
    ):
        # Alternate which library goes first so neither always profits from
        # (or pays for) the state the other leaves in caches and allocators.
        for library in order if repeat % 2 == 0 else order[::-1]:
            estimator = make_estimator(library, case, covariance_type, args)
            elapsed = timed_fit(estimator, X)
            seconds[library] = min(seconds[library], elapsed)
            spent[library] += elapsed
            fitted[library] = estimator
        repeat += 1
    peak_bytes = {}
    for library in order:
        estimator = make_estimator(library, case, covariance_type, args)
        peak_bytes[library] = peak_fit_bytes(estimator, X)
    # Sanity check that both did comparable work: mean log-likelihood of X.
    mean_loglik = {name: float(model.score(X)) for name, model in fitted.items()}
    for name, model in fitted.items():
        if model.n_iter_ != args.max_iter:
            raise RuntimeError(
                f"{name} ran {model.n_iter_} iterations, expected {args.max_iter}"
            )
    return Result(
        case, covariance_type, dtype, seconds, peak_bytes, mean_loglik, repeat
    )


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info():
    lines = [
        f"- Platform: {platform.platform()}",
        f"- CPU: {cpu_model()}, os.cpu_count() = {os.cpu_count()}",
    ]
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        lines.append(f"- Load average at start (1, 5, 15 min): {load}")
    lines.append(
        f"- Python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, "
        f"skvi {skvi.__version__}"
    )
    for pool in threadpool_info():
        version = pool.get("version") or "?"
        lines.append(
            f"- Thread pool: {pool['internal_api']} {version} "
            f"({pool['user_api']}, threads={pool['num_threads']}, "
            f"{os.path.basename(pool['filepath'])})"
        )
    return lines


def format_bytes(n_bytes):
    if abs(n_bytes) < 1024:
        return f"{n_bytes:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n_bytes /= 1024
        if abs(n_bytes) < 1024 or unit == "GiB":
            break
    return f"{n_bytes:.1f} {unit}"


def format_seconds(seconds):
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def markdown_table(results):
    header = (
        "| data | covariance | dtype | speed ratio | memory ratio | skvi time "
        "| sklearn time | skvi peak | sklearn peak | fits | Δ mean log-lik |"
    )
    rule = "|" + "---|" * 3 + "---:|" * 8
    rows = [header, rule]
    for r in results:
        delta = r.mean_loglik["skvi"] - r.mean_loglik["sklearn"]
        rows.append(
            f"| {r.case.label} | {r.covariance_type} | {np.dtype(r.dtype).name} "
            f"| **{r.speed_ratio:.2f}x** | **{r.memory_ratio:.2f}x** "
            f"| {format_seconds(r.seconds['skvi'])} "
            f"| {format_seconds(r.seconds['sklearn'])} "
            f"| {format_bytes(r.peak_bytes['skvi'])} "
            f"| {format_bytes(r.peak_bytes['sklearn'])} "
            f"| {r.repeats} | {delta:+.1e} |"
        )
    return rows


def settings_lines(args):
    return [
        f"- Settings: max_iter={args.max_iter}, tol=0, "
        f"init_params={args.init_params!r}, random_state={args.random_state}, "
        f"n_init=1, best of at least {args.repeats} alternating repeats "
        f"(fast fits repeated up to {args.min_time:g} s or {MAX_REPEATS} "
        "fits per library; the 'fits' column), "
        f"threads={'library default' if args.threads is None else args.threads}.",
        "- Ratios are sklearn / skvi: above 1 means skvi is faster (speed) or "
        "allocates less at its peak (memory).",
        "- Both run exactly max_iter iterations (tol=0). skvi's fit does "
        "max_iter + 1 E-steps and max_iter M-steps (it ends on an E-step); "
        "scikit-learn's does max_iter E-steps and M-steps plus a final "
        "E-step. Both times include the initialisation (init_params). This is the "
        "user-facing cost of `fit` with the same max_iter.",
        "- Peak memory: tracemalloc peak during one untimed `fit`, above what "
        "was allocated before it (X itself is not counted; copies made by "
        "`fit` are).",
        "- Δ mean log-lik: skvi.score(X) - sklearn.score(X), a check that "
        "both reached comparable fits.",
    ]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="only the small data sets (smoke test)"
    )
    parser.add_argument("--output", metavar="FILE", help="also write markdown here")
    parser.add_argument(
        "--repeats", type=int, default=3, help="minimum timed fits per case"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.3,
        help="repeat fast fits until each library spent this many seconds "
        f"(at most {MAX_REPEATS} fits)",
    )
    parser.add_argument("--max-iter", type=int, default=10, help="EM iterations")
    parser.add_argument(
        "--init-params",
        default="kmeans",
        choices=["kmeans", "k-means++", "random", "random_from_data"],
    )
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="limit BLAS and OpenMP threads (threadpoolctl); default: no limit",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.max_iter < 1:
        parser.error("--repeats and --max-iter must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    # limits=None leaves every thread pool as it is.
    with threadpool_limits(limits=args.threads):
        run(args)


def run(args):
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])

    lines = ["## Machine", "", *machine_info(), "", "## Settings", ""]
    lines += [f"- Command: `{command}`", *settings_lines(args)]
    print("\n".join(lines), flush=True)

    cases = build_cases(args.quick)
    # One untimed fit each, so import-time and first-call costs are paid.
    warm = Case("warm-up", load_old_faithful(return_X_y=True), 2)
    for library in LIBRARIES:
        make_estimator(library, warm, "full", args).fit(warm.X)
    # Move everything alive now (modules, the data) out of the collector's
    # view, so the gc.collect() before each fit costs microseconds.
    gc.collect()
    gc.freeze()

    results = []
    start = time.perf_counter()
    for case in cases:
        for dtype in DTYPES:
            for covariance_type in COVARIANCE_TYPES:
                result = measure(case, covariance_type, dtype, args)
                results.append(result)
                print(
                    f"  {case.label:<38} {covariance_type:<9} "
                    f"{np.dtype(dtype).name:<7} speed {result.speed_ratio:6.2f}x  "
                    f"memory {result.memory_ratio:6.2f}x",
                    flush=True,
                )
    elapsed = time.perf_counter() - start

    table = ["", "## Results", "", *markdown_table(results), ""]
    table.append(f"Total benchmark time: {elapsed:.0f} s.  ")
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        table.append(f"Load average at end (1, 5, 15 min): {load}.")
    print("\n".join(table))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines + table) + "\n")


if __name__ == "__main__":
    main()
