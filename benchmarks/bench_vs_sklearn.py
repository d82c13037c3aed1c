"""Time and memory of skvi's mixtures next to scikit-learn's, one fit per process.

``skvi.EMGaussianMixture`` is compared with ``sklearn.mixture.GaussianMixture``
and ``skvi.VariationalGaussianMixture`` with
``sklearn.mixture.BayesianGaussianMixture`` on synthetic blobs (n samples, d
features, K components), every fit running exactly ``--max-iter`` (10)
iterations (``tol=0``; the script checks ``n_iter_``).

Method
------
* The data of a case are generated once with a fixed seed and written to a
  temporary directory, with, for EM, one set of starting parameters
  (``weights_init``, ``means_init``, ``precisions_init``) taken from a one
  iteration scikit-learn fit from ``init_params="random_from_data"`` (computed
  in float64, then cast to the case's dtype). Both libraries get the same
  arrays; VI gets ``init_params="random_from_data", random_state=0``.
* Every fit runs in a fresh Python process with one BLAS / OpenMP thread
  (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` set to 1
  and ``threadpoolctl.threadpool_limits(1)``). The child imports both
  libraries, loads the data, makes one small untimed warm-up fit of the same
  estimator on the first rows, then times ``fit(X)`` with
  ``time.perf_counter`` and reports the time and ``score(X)`` as a JSON line.
* The libraries alternate in pairs (``--pairs``, 5 by default), and which one
  goes first switches on every pair; the medians are reported, and the
  speedup is ``median sklearn / median skvi``.
* Memory: one more child per library and case, untimed, reads the
  ``tracemalloc`` peak of ``fit`` (started just before it; numpy reports its
  buffers to tracemalloc, so X itself is not counted).
* FLOP floor of a full-covariance case: ``max_iter * 4 * n * K * d**2`` flops
  at the single-thread dgemm (or sgemm) rate measured in a child process of
  the same run; the ratio ``skvi time / floor time`` says how far skvi is from
  running its matrix products at BLAS speed.

Usage::

    python benchmarks/bench_vs_sklearn.py                       # full run
    python benchmarks/bench_vs_sklearn.py --quick               # base cases, 3 pairs
    python benchmarks/bench_vs_sklearn.py --cases small-em,small-vi --pairs 1
    python benchmarks/bench_vs_sklearn.py --layouts             # LAYOUT_COSTS

``--layouts`` times one E-step pass of full precisions in each of the
kernel's two layouts (expanded features, per component) on a grid of
features and components, in a one-thread child (process time, best of a
few), and fits the constants of ``skvi._kernel.LAYOUT_COSTS`` to them by
non-negative least squares on relative errors; it prints both, and which
layout the fitted and the current constants pick at each point.

See ``benchmarks/README.md`` for how to read the output.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

LIBRARIES = ("skvi", "sklearn")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LARGER_FACTOR = 5
GEMM_SIZE = 2000
GEMM_REPEATS = 5
# The kernel floor (child_floor): chunk rows and best-of repeats.
FLOOR_CHUNK_ROWS = 4096
FLOOR_REPEATS = 3
# From this many features skvi computes values as the transposed product.
TRANSPOSED_PRODUCT_FEATURES = 512
# The warm-up fit uses the first max(500, 8 K d) rows (enough to keep every
# component well defined) for one iteration.
WARM_UP_ROWS = 500
# The layout calibration (--layouts): full precisions on this grid of
# (features, components), LAYOUT_ROWS rows each, best of LAYOUT_REPEATS.
LAYOUT_FEATURES = (8, 16, 24, 32, 48, 64)
LAYOUT_COMPONENTS = (2, 8, 32)
LAYOUT_ROWS = 6000
LAYOUT_REPEATS = 3
# float32 weights are rounded to multiples of 2**-20 so that they sum to
# exactly 1 in both float32 and float64 (both libraries check the sum).
WEIGHT_GRID = 2.0**-20
MIB = 2.0**20


# ----------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One benchmark case: the estimator, its settings and the data size."""

    name: str
    estimator: str  # "EM" or "VI"
    covariance: str
    dtype: str
    n: int
    d: int
    k: int
    seed: int
    prior_type: str | None = None
    # "blobs" (make_blobs) or "digits" (scikit-learn's bundled digits).
    data: str = "blobs"

    @property
    def is_small(self):
        return self.name.startswith("small-")

    @property
    def flops(self):
        """Matrix-product flops of one iteration of a full-covariance fit."""
        return 4 * self.n * self.k * self.d**2

    def larger(self, factor):
        return replace(
            self, name=f"{self.name}-x{factor}", n=self.n * factor, seed=self.seed + 100
        )


DP = "dirichlet_process"
DD = "dirichlet_distribution"
BASE_CASES = (
    Case("em-full", "EM", "full", "float64", 40_000, 16, 32, seed=1),
    Case("em-full-d2", "EM", "full", "float64", 200_000, 2, 8, seed=2),
    Case("em-full-d64", "EM", "full", "float64", 20_000, 64, 16, seed=3),
    Case("em-diag", "EM", "diag", "float64", 100_000, 32, 32, seed=4),
    Case("em-tied", "EM", "tied", "float64", 40_000, 16, 32, seed=5),
    Case("em-spherical", "EM", "spherical", "float64", 200_000, 8, 16, seed=6),
    Case("em-full-f32", "EM", "full", "float32", 40_000, 16, 32, seed=1),
    Case("vi-full-dp", "VI", "full", "float64", 40_000, 16, 32, seed=7, prior_type=DP),
    Case("vi-diag-dd", "VI", "diag", "float64", 100_000, 32, 32, seed=8, prior_type=DD),
    Case("small-em", "EM", "full", "float64", 2_000, 4, 3, seed=9),
    Case("small-vi", "VI", "full", "float64", 2_000, 4, 3, seed=10),
)
# Many features, few rows: scikit-learn's digits (1,797 x 64), K=10. Not in
# the default runs; ``--cases digits`` selects all four.
DIGITS_CASES = (
    Case("digits-full", "EM", "full", "float64", 1_797, 64, 10, 0, data="digits"),
    Case("digits-diag", "EM", "diag", "float64", 1_797, 64, 10, 0, data="digits"),
    Case("digits-vi-full", "VI", "full", "float64", 1_797, 64, 10, 0, DP, "digits"),
    Case("digits-vi-diag", "VI", "diag", "float64", 1_797, 64, 10, 0, DP, "digits"),
)
CASE_GROUPS = {"digits": [case.name for case in DIGITS_CASES]}


def full_run_cases():
    """Each large base case followed by its 5x larger version, then the small."""
    cases = []
    for case in BASE_CASES:
        if not case.is_small:
            cases += [case, case.larger(LARGER_FACTOR)]
    return cases + [case for case in BASE_CASES if case.is_small]


def known_cases():
    return full_run_cases() + list(DIGITS_CASES)


def select_cases(names, quick):
    if names is None:
        return list(BASE_CASES) if quick else full_run_cases()
    wanted = set()
    for name in names:
        wanted.update(CASE_GROUPS.get(name, [name]))
    return [case for case in known_cases() if case.name in wanted]


# ------------------------------------------------------------------ data
def make_blobs(n, d, k, seed):
    """Gaussian clusters with random centres and axis-aligned spreads."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    labels = rng.integers(k, size=n)
    return centers[labels] + scales[labels] * rng.standard_normal((n, d))


def cast_weights(weights, dtype):
    """Mixture weights in ``dtype`` that still sum to 1 in that precision."""
    if dtype == np.float64:
        return weights.astype(np.float64)
    grid = np.maximum(np.round(weights / WEIGHT_GRID), 1.0) * WEIGHT_GRID
    grid[np.argmax(grid)] += 1.0 - grid.sum()
    return grid.astype(dtype)


def starting_parameters(case, X):
    """EM starting parameters from a one-iteration scikit-learn fit (float64)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(
            case.k,
            covariance_type=case.covariance,
            max_iter=1,
            init_params="random_from_data",
            random_state=0,
        ).fit(X)
    dtype = np.dtype(case.dtype)
    return {
        "weights_init": cast_weights(model.weights_, dtype),
        "means_init": model.means_.astype(dtype),
        "precisions_init": model.precisions_.astype(dtype),
    }


def case_data(case):
    if case.data == "digits":
        from sklearn.datasets import load_digits

        return load_digits().data.astype(np.float64)
    return make_blobs(case.n, case.d, case.k, case.seed)


def write_case_files(case, folder):
    """Write X (and the EM starting parameters) where the children read them."""
    X = case_data(case)
    paths = {"data": str(folder / f"{case.name}-X.npy"), "init": None}
    np.save(paths["data"], X.astype(case.dtype))
    if case.estimator == "EM":
        paths["init"] = str(folder / f"{case.name}-init.npz")
        # One thread here too: the machine may be shared while this runs.
        with threadpool_limits(1):
            np.savez(paths["init"], **starting_parameters(case, X))
    return paths


def remove_case_files(paths):
    for path in paths.values():
        if path is not None:
            os.remove(path)


# --------------------------------------------------------------- children
def child_environment():
    """The parent's environment with one BLAS / OpenMP thread.

    The checkout this script lives in comes first on ``PYTHONPATH``: a child
    runs this file by path, so its ``sys.path[0]`` is ``benchmarks/`` and it
    would otherwise import whichever skvi is installed (another checkout).
    """
    environment = dict(os.environ)
    environment.update({name: "1" for name in THREAD_VARIABLES})
    root = str(Path(__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [root, environment.get("PYTHONPATH")])
    )
    return environment


def run_child(task, script=__file__, environment=None):
    """Run ``task`` (a dict) in a fresh interpreter; return its JSON answer.

    The child is ``script --child TASK`` (this file by default; another
    benchmark passes its own), with ``environment`` (default: one thread).
    """
    completed = subprocess.run(
        [sys.executable, os.path.abspath(script), "--child", json.dumps(task)],
        env=child_environment() if environment is None else environment,
        capture_output=True,
        text=True,
        check=False,
    )
    name = task.get("kind", "task")
    if completed.returncode != 0:
        raise RuntimeError(
            f"child {name} failed (exit {completed.returncode}):\n"
            f"{completed.stderr[-3000:]}"
        )
    answers = [line for line in completed.stdout.splitlines() if line[:1] == "{"]
    if not answers:
        raise RuntimeError(f"child {name} printed no result")
    return json.loads(answers[-1])


def fit_task(case, paths, library, kind, max_iter):
    return {
        "kind": kind,
        "library": library,
        "estimator": case.estimator,
        "covariance": case.covariance,
        "k": case.k,
        "prior_type": case.prior_type,
        "max_iter": max_iter,
        **paths,
    }


def estimator_classes():
    """Import both libraries; the estimator classes by (library, estimator)."""
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    import skvi

    return {
        ("skvi", "EM"): skvi.EMGaussianMixture,
        ("skvi", "VI"): skvi.VariationalGaussianMixture,
        ("sklearn", "EM"): GaussianMixture,
        ("sklearn", "VI"): BayesianGaussianMixture,
    }


def make_estimator(classes, task, init, max_iter):
    params = {
        "n_components": task["k"],
        "covariance_type": task["covariance"],
        "max_iter": max_iter,
        "tol": 0.0,
        "init_params": "random_from_data",
        "random_state": 0,
    }
    if task["estimator"] == "EM":
        params.update(init)
    else:
        if task["prior_type"] is not None:
            params["weight_concentration_prior_type"] = task["prior_type"]
        if task["library"] == "skvi":
            # The same algorithm on both sides: scikit-learn has no merge
            # moves, which add one E-step per iteration (see RESULTS.md).
            params["merge_components"] = False
    return classes[task["library"], task["estimator"]](**params)


def load_init(path):
    if path is None:
        return {}
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


def child_fit(task):
    """Time (or trace the memory of) one fit; the answer of a fit child."""
    classes = estimator_classes()
    X = np.load(task["data"])
    init = load_init(task["init"])
    # An untimed fit on the first rows pays first-call costs (lazy imports,
    # allocator arenas) so the timed fit measures the steady state.
    rows = max(WARM_UP_ROWS, 8 * task["k"] * X.shape[1])
    make_estimator(classes, task, init, max_iter=1).fit(X[:rows])
    estimator = make_estimator(classes, task, init, task["max_iter"])
    gc.collect()
    answer = {"library": task["library"]}
    if task["kind"] == "memory":
        tracemalloc.start()
        estimator.fit(X)
        answer["peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        start = time.perf_counter()
        estimator.fit(X)
        answer["seconds"] = time.perf_counter() - start
    if estimator.n_iter_ != task["max_iter"]:
        raise RuntimeError(
            f"{task['library']} ran {estimator.n_iter_} iterations, "
            f"expected {task['max_iter']}"
        )
    answer["score"] = float(estimator.score(X))
    return answer


def child_gemm(_task):
    """Best single-thread dgemm and sgemm rates in flop/s."""
    rng = np.random.default_rng(0)
    rates = {}
    for dtype in ("float64", "float32"):
        A = rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype(dtype)
        B = rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype(dtype)
        A @ B  # warm-up
        best = np.inf
        for _ in range(GEMM_REPEATS):
            start = time.perf_counter()
            A @ B
            best = min(best, time.perf_counter() - start)
        rates[dtype] = 2 * GEMM_SIZE**3 / best
    return rates


def kernel_features(covariance, d):
    """Features per row of skvi's expanded layout: [1, e, second order]."""
    second = {"full": d * (d + 1) // 2, "diag": d, "spherical": 1, "tied": 0}
    return 1 + d + second[covariance]


def child_floor(task):
    """Seconds of a case's matrix products alone, best of a few repeats.

    Per iteration, the two products of skvi's expanded layout over all rows
    in chunks of FLOOR_CHUNK_ROWS: the values (K, P) @ (P, m) and the
    statistics (K, m) @ (m, P), P features per row (kernel_features).
    Nothing else: no features built, no exponentials, no M-step.
    """
    rng = np.random.default_rng(0)
    dtype = np.dtype(task["dtype"])
    n, k = task["n"], task["k"]
    p = kernel_features(task["covariance"], task["d"])
    m = min(FLOOR_CHUNK_ROWS, n)
    features = rng.standard_normal((p, m)).astype(dtype)
    coefficients = rng.standard_normal((k, p)).astype(dtype)
    values = np.empty((k, m), dtype=dtype)
    sums = np.empty((k, p), dtype=dtype)
    sizes = [min(m, n - start) for start in range(0, n, m)]

    def one_iteration():
        for size in sizes:
            block = features[:, :size]
            if p < TRANSPOSED_PRODUCT_FEATURES:
                np.matmul(coefficients, block, out=values[:, :size])
            else:
                # skvi's faster orientation for many features (_kernel._product).
                values[:, :size] = (block.T @ coefficients.T).T
            np.matmul(values[:, :size], block.T, out=sums)

    one_iteration()  # warm-up
    best = np.inf
    for _ in range(FLOOR_REPEATS):
        start = time.perf_counter()
        one_iteration()
        best = min(best, time.perf_counter() - start)
    return {"seconds": best * task["max_iter"]}


def child_info(_task):
    """Versions and thread pools as a one-thread child sees them."""
    import scipy
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS for threadpool_info)
    import sklearn

    estimator_classes()  # loads skvi and scikit-learn's OpenMP runtime
    import skvi

    pools = [
        {
            "library": pool.get("internal_api"),
            "api": pool.get("user_api"),
            "version": pool.get("version"),
            "threads": pool.get("num_threads"),
            "file": os.path.basename(pool.get("filepath", "")),
            "architecture": pool.get("architecture"),
        }
        for pool in threadpool_info()
    ]
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "skvi": skvi.__version__,
        "skvi_path": os.path.dirname(skvi.__file__),
        "pools": pools,
        "coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


def child_layouts(_task):
    """Nanoseconds per row of one E-step pass in each layout, over the grid."""
    import skvi._kernel as kernel
    from skvi._covariance import covariance_unit

    # Cost constants that force one layout (see per_component_cheaper).
    forced = {"expanded": (0.0, 0.0, 1.0, 1.0), "per_component": (1.0, 1.0, 0.0, 0.0)}
    rng = np.random.default_rng(0)
    rows = []
    for dtype in (np.dtype(np.float64), np.dtype(np.float32)):
        saved = kernel.LAYOUT_COSTS[dtype]
        for d in LAYOUT_FEATURES:
            for k in LAYOUT_COMPONENTS:
                unit = covariance_unit("full", k, d)
                X = rng.standard_normal((LAYOUT_ROWS, d)).astype(dtype)
                # Nearly coincident means: one shared center in both dtypes.
                means = 0.02 * rng.standard_normal((k, d))
                roots = 0.1 * rng.standard_normal((k, d, d))
                precisions = np.eye(d) + roots @ np.swapaxes(roots, 1, 2)
                factors = unit.cholesky_from_precision(precisions)
                row = {"dtype": dtype.name, "d": d, "k": k}
                for layout, costs in forced.items():
                    kernel.LAYOUT_COSTS[dtype] = costs
                    try:
                        plan = kernel.parameter_expansion(
                            unit,
                            means,
                            precisions,
                            factors,
                            np.ones(k),
                            dtype,
                            -0.5,
                            np.zeros(k),
                        )
                    finally:
                        kernel.LAYOUT_COSTS[dtype] = saved
                    row[layout] = 1e9 * _pass_seconds(kernel, plan, X) / LAYOUT_ROWS
                rows.append(row)
    current = {name.name: list(costs) for name, costs in kernel.LAYOUT_COSTS.items()}
    return {"rows": rows, "current": current}


def _pass_seconds(kernel, plan, X):
    """Best process time of one E-step pass of ``plan`` over ``X``."""
    chunks = plan.chunks(len(X))
    weights = np.ones(len(X))
    longest = max(rows.stop - rows.start for rows in chunks)

    def one_pass():
        statistics_pass = kernel.StatisticsPass(plan, longest)
        for rows in chunks:
            statistics_pass.add_optimal(X[rows], weights[rows])
        statistics_pass.totals()

    one_pass()  # warm-up
    best = np.inf
    for _ in range(LAYOUT_REPEATS):
        start = time.process_time()
        one_pass()
        best = min(best, time.process_time() - start)
    return best


def layout_model_terms(d, k):
    """The terms of each layout's cost model (see per_component_cheaper)."""
    features = 1 + d + d * (d + 1) // 2
    return np.array([features, features * k]), np.array([k * d * d, k * d])


def fit_layout_costs(rows):
    """LAYOUT_COSTS for one dtype: NNLS on relative errors of both layouts."""
    from scipy.optimize import nnls

    constants = []
    for index, layout in enumerate(("expanded", "per_component")):
        terms = np.array([layout_model_terms(r["d"], r["k"])[index] for r in rows])
        measured = np.array([r[layout] for r in rows])
        fitted, _ = nnls(terms / measured[:, np.newaxis], np.ones(len(rows)))
        constants += list(fitted)
    return constants


def layout_lines(answer):
    """The measured grid, the fitted constants and each model's picks."""
    lines = [
        "| dtype | d | K | expanded ns/row | per-component ns/row | faster "
        "| fitted picks | current picks |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    fitted = {}
    for dtype in ("float64", "float32"):
        rows = [row for row in answer["rows"] if row["dtype"] == dtype]
        fitted[dtype] = fit_layout_costs(rows)
        for row in rows:
            expanded, per_component = layout_model_terms(row["d"], row["k"])

            def pick(costs, expanded=expanded, per_component=per_component):
                cheaper = per_component @ costs[2:] < expanded @ costs[:2]
                return "per component" if cheaper else "expanded"

            faster = (
                "per component"
                if row["per_component"] < row["expanded"]
                else "expanded"
            )
            lines.append(
                f"| {dtype} | {row['d']} | {row['k']} | {row['expanded']:.0f} "
                f"| {row['per_component']:.0f} | {faster} "
                f"| {pick(np.array(fitted[dtype]))} "
                f"| {pick(np.array(answer['current'][dtype]))} |"
            )
    lines.append("")
    for dtype, constants in fitted.items():
        text = ", ".join(f"{value:.3g}" for value in constants)
        current = ", ".join(f"{value:.3g}" for value in answer["current"][dtype])
        lines.append(f"- {dtype}: fitted ({text}); current ({current}).")
    return lines


CHILD_TASKS = {
    "fit": child_fit,
    "memory": child_fit,
    "gemm": child_gemm,
    "floor": child_floor,
    "info": child_info,
    "layouts": child_layouts,
}


def child_main(encoded):
    from sklearn.exceptions import ConvergenceWarning

    # tol=0 runs stop at max_iter on purpose.
    warnings.simplefilter("ignore", ConvergenceWarning)
    task = json.loads(encoded)
    with threadpool_limits(1):
        answer = CHILD_TASKS[task["kind"]](task)
    print(json.dumps(answer), flush=True)


# ------------------------------------------------------------ measuring
@dataclass
class Result:
    """The measurements of one case."""

    case: Case
    seconds: dict = field(default_factory=lambda: {lib: [] for lib in LIBRARIES})
    scores: dict = field(default_factory=lambda: {lib: [] for lib in LIBRARIES})
    peak_bytes: dict = field(default_factory=dict)
    # Seconds of the case's kernel matrix products alone (child_floor).
    floor_seconds: float | None = None

    def median(self, library):
        return statistics.median(self.seconds[library])

    @property
    def pairs(self):
        return len(self.seconds["skvi"])

    @property
    def speedup(self):
        return self.median("sklearn") / self.median("skvi")

    @property
    def memory_ratio(self):
        if not self.peak_bytes:
            return None
        return self.peak_bytes["skvi"] / self.peak_bytes["sklearn"]

    @property
    def delta_loglik(self):
        skvi, sklearn = (statistics.median(self.scores[lib]) for lib in LIBRARIES)
        return skvi - sklearn


def measure_case(case, paths, args):
    result = Result(case)
    for pair in range(args.pairs):
        order = LIBRARIES if pair % 2 == 0 else LIBRARIES[::-1]
        for library in order:
            answer = run_child(fit_task(case, paths, library, "fit", args.max_iter))
            result.seconds[library].append(answer["seconds"])
            result.scores[library].append(answer["score"])
    floor_task = {
        "kind": "floor",
        "n": case.n,
        "d": case.d,
        "k": case.k,
        "covariance": case.covariance,
        "dtype": case.dtype,
        "max_iter": args.max_iter,
    }
    result.floor_seconds = run_child(floor_task)["seconds"]
    if not args.skip_memory:
        for library in LIBRARIES:
            task = fit_task(case, paths, library, "memory", args.max_iter)
            result.peak_bytes[library] = run_child(task)["peak_bytes"]
    return result


def floor_ratios(result, rates, max_iter):
    """``skvi time / floor time`` per gemm precision; empty unless full."""
    case = result.case
    if case.covariance != "full" or not rates:
        return {}
    precisions = ["float64"] if case.dtype == "float64" else ["float64", "float32"]
    flops = max_iter * case.flops
    return {p: result.median("skvi") * rates[p] / flops for p in precisions}


# ------------------------------------------------------------ formatting
def format_seconds(seconds):
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def format_mib(n_bytes):
    if n_bytes is None:
        return "–"
    mib = n_bytes / MIB
    return f"{mib:.2f}" if mib < 10 else f"{mib:.1f}"


def format_floor(ratios):
    if not ratios:
        return "–"
    if len(ratios) == 1:
        return f"{ratios['float64']:.2f}"
    return f"{ratios['float64']:.2f} (f64) / {ratios['float32']:.2f} (f32)"


def load_average():
    if not hasattr(os, "getloadavg"):
        return "unavailable"
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines(info):
    lines = [
        f"- Platform: {platform.platform()}",
        f"- CPU: {cpu_model()}; os.cpu_count() = {os.cpu_count()}",
        f"- Load average at start (1, 5, 15 min): {load_average()}",
        f"- Python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, "
        f"scikit-learn {info['sklearn']}, skvi {info['skvi']} "
        f"(from {info['skvi_path']})",
        f"- OPENBLAS_CORETYPE = {info['coretype']!r} (inherited by every child)",
    ]
    for pool in info["pools"]:
        architecture = f", {pool['architecture']}" if pool["architecture"] else ""
        lines.append(
            f"- Thread pool in a child: {pool['library']} {pool['version'] or '?'} "
            f"({pool['api']}, threads={pool['threads']}{architecture}, "
            f"{pool['file']})"
        )
    return lines


def settings_lines(args, cases, rates):
    lines = [
        f"- Command: `{command_line()}`",
        f"- Cases: {', '.join(case.name for case in cases)}",
        f"- max_iter={args.max_iter}, tol=0 (every fit runs exactly max_iter "
        "iterations); EM: identical weights_init / means_init / precisions_init "
        "for both libraries; VI: init_params='random_from_data', random_state=0.",
        f"- Pairs per case: {args.pairs}, alternating, the first library switching "
        "every pair; each fit in a fresh process with one BLAS / OpenMP thread, "
        "after an untimed one-iteration warm-up fit on the first rows; times are "
        "medians.",
        "- Speedup = median sklearn / median skvi (above 1: skvi faster). "
        "Memory ratio = skvi extra peak / sklearn extra peak (below 1: skvi "
        "allocates less).",
        "- Memory: " + memory_setting(args),
    ]
    if rates:
        lines.append(
            f"- Single-thread gemm ({GEMM_SIZE}x{GEMM_SIZE}, best of "
            f"{GEMM_REPEATS}): dgemm {rates['float64'] / 1e9:.1f} GFLOP/s, "
            f"sgemm {rates['float32'] / 1e9:.1f} GFLOP/s. Floor of a full case: "
            "max_iter * 4 n K d^2 flops at that rate; floor ratio = skvi time / "
            "floor time."
        )
    return lines


def memory_setting(args):
    if args.skip_memory:
        return "skipped (--skip-memory)."
    return (
        "tracemalloc peak of one more, untimed fit per library and case, "
        "started just before fit (X itself is not counted)."
    )


def command_line():
    return "python " + shlex.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def progress_line(index, total, result, seconds):
    case = result.case
    memory = result.memory_ratio
    memory_text = "–" if memory is None else f"{memory:.2f}"
    return (
        f"- [{index}/{total}] {case.name}: {case.estimator} {case.covariance} "
        f"{case.dtype} n={case.n:_} d={case.d} K={case.k}: skvi "
        f"{format_seconds(result.median('skvi'))}, sklearn "
        f"{format_seconds(result.median('sklearn'))}, speedup "
        f"{result.speedup:.2f}x, memory ratio {memory_text}, "
        f"Δ mean log-lik {result.delta_loglik:+.1e} ({seconds:.0f} s)"
    )


TABLE_HEADER = (
    "| case | estimator | covariance | dtype | n | d | K | skvi median "
    "| sklearn median | speedup | skvi extra peak MiB | sklearn extra peak MiB "
    "| memory ratio | floor ratio | Δ mean log-lik | pairs |"
)
TABLE_RULE = "|" + "---|" * 4 + "---:|" * 12


def table_lines(results, rates, max_iter):
    rows = [TABLE_HEADER, TABLE_RULE]
    for r in results:
        case = r.case
        memory = r.memory_ratio
        rows.append(
            f"| {case.name} | {case.estimator} | {case.covariance} | {case.dtype} "
            f"| {case.n:_} | {case.d} | {case.k} "
            f"| {format_seconds(r.median('skvi'))} "
            f"| {format_seconds(r.median('sklearn'))} | **{r.speedup:.2f}x** "
            f"| {format_mib(r.peak_bytes.get('skvi'))} "
            f"| {format_mib(r.peak_bytes.get('sklearn'))} "
            f"| {'–' if memory is None else f'{memory:.2f}'} "
            f"| {format_floor(floor_ratios(r, rates, max_iter))} "
            f"| {r.delta_loglik:+.1e} | {r.pairs} |"
        )
    return rows


def float32_lines(results):
    """How much faster skvi's float32 fit is than its float64 fit."""
    by_name = {r.case.name: r for r in results}
    lines = []
    for suffix in ("", f"-x{LARGER_FACTOR}"):
        f64 = by_name.get(f"em-full{suffix}")
        f32 = by_name.get(f"em-full-f32{suffix}")
        if f64 is None or f32 is None:
            continue
        lines.append(
            f"- float32 vs float64 (em-full{suffix}): skvi's float32 fit is "
            f"{f64.median('skvi') / f32.median('skvi'):.2f}x faster than its "
            f"float64 fit (scikit-learn: "
            f"{f64.median('sklearn') / f32.median('sklearn'):.2f}x)."
        )
    return lines or ["- float32 vs float64: needs both em-full and em-full-f32."]


def summary_lines(results):
    large = [r for r in results if not r.case.is_small]
    small = [r for r in results if r.case.is_small]
    lines = []
    if large:
        slowest = min(large, key=lambda r: r.speedup)
        speedup = statistics.median(r.speedup for r in large)
        lines += [
            f"- Median speedup over the {len(large)} non-small cases: "
            f"**{speedup:.2f}x**.",
            f"- Minimum speedup (non-small): {slowest.speedup:.2f}x "
            f"({slowest.case.name}).",
        ]
        ratios = [r.memory_ratio for r in large if r.memory_ratio is not None]
        if ratios:
            lines.append(
                "- Median memory ratio (skvi / sklearn extra peak, non-small): "
                f"{statistics.median(ratios):.2f}."
            )
    for r in small:
        lines.append(
            f"- {r.case.name}: speedup {r.speedup:.2f}x "
            f"(skvi {format_seconds(r.median('skvi'))}, "
            f"sklearn {format_seconds(r.median('sklearn'))})."
        )
    return lines + float32_lines(results)


def floor_lines(results, rates, max_iter):
    """Per full-covariance case: the flops, the floor time and the ratios."""
    lines = []
    for r in results:
        ratios = floor_ratios(r, rates, max_iter)
        if not ratios:
            continue
        flops = max_iter * r.case.flops
        parts = [
            f"{precision} floor {format_seconds(flops / rates[precision])} "
            f"(skvi {ratio:.2f}x, sklearn "
            f"{r.median('sklearn') * rates[precision] / flops:.2f}x)"
            for precision, ratio in ratios.items()
        ]
        lines.append(
            f"- {r.case.name}: {flops / 1e9:.1f} GFLOP; " + "; ".join(parts) + "."
        )
    return lines


def kernel_floor_lines(results):
    """Per case: the time of its kernel products alone, and both ratios."""
    lines = []
    for r in results:
        if r.floor_seconds is None:
            continue
        floor = r.floor_seconds
        case = r.case
        lines.append(
            f"- {case.name}: {kernel_features(case.covariance, case.d)} features "
            f"per row, floor {format_seconds(floor)}; skvi "
            f"{r.median('skvi') / floor:.1f}x its floor, sklearn "
            f"{r.median('sklearn') / floor:.1f}x."
        )
    return lines


# ------------------------------------------------------------------ main
class Report:
    """Lines printed as they come and kept for ``--output``."""

    def __init__(self):
        self.lines = []

    def emit(self, *lines):
        print("\n".join(lines), flush=True)
        self.lines += lines

    def write(self, path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(self.lines) + "\n")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See benchmarks/README.md for how to read the output.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="base cases only (no -x5), 3 pairs"
    )
    parser.add_argument(
        "--pairs", type=int, default=None, help="timed pairs per case (5; quick: 3)"
    )
    parser.add_argument(
        "--cases",
        metavar="NAME[,NAME...]",
        type=lambda text: [name for name in text.split(",") if name],
        help="run only these cases (any of: "
        + ", ".join(case.name for case in known_cases())
        + "; 'digits' for the four digits cases)",
    )
    parser.add_argument("--output", metavar="FILE", help="also write markdown here")
    parser.add_argument("--max-iter", type=int, default=10, help="iterations per fit")
    parser.add_argument(
        "--skip-memory", action="store_true", help="no tracemalloc children"
    )
    parser.add_argument(
        "--layouts",
        action="store_true",
        help="fit the kernel's layout cost model (LAYOUT_COSTS) instead",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pairs is None:
        args.pairs = 3 if args.quick else 5
    if args.pairs < 1 or args.max_iter < 1:
        parser.error("--pairs and --max-iter must be at least 1")
    if args.cases is not None:
        known = {case.name for case in known_cases()} | set(CASE_GROUPS)
        unknown = [name for name in args.cases if name not in known]
        if unknown:
            parser.error(
                f"unknown case(s) {', '.join(unknown)}; known: {sorted(known)}"
            )
    return args


def run_benchmark(args):
    report = Report()
    cases = select_cases(args.cases, args.quick)
    info = run_child({"kind": "info"})
    needs_gemm = any(case.covariance == "full" for case in cases)
    rates = run_child({"kind": "gemm"}) if needs_gemm else {}
    report.emit("## Machine", "", *machine_lines(info), "")
    report.emit("## Settings", "", *settings_lines(args, cases, rates), "")
    report.emit("## Progress", "")

    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skvi-bench-") as folder:
        for index, case in enumerate(cases, start=1):
            case_start = time.perf_counter()
            paths = write_case_files(case, Path(folder))
            try:
                result = measure_case(case, paths, args)
            finally:
                remove_case_files(paths)
            results.append(result)
            elapsed = time.perf_counter() - case_start
            report.emit(progress_line(index, len(cases), result, elapsed))
    total = time.perf_counter() - start

    report.emit("", "## Results", "", *table_lines(results, rates, args.max_iter))
    report.emit("", "## Summary", "", *summary_lines(results))
    floors = floor_lines(results, rates, args.max_iter)
    if floors:
        report.emit("", "## FLOP floor (full covariance)", "", *floors)
    kernel_floors = kernel_floor_lines(results)
    if kernel_floors:
        report.emit(
            "",
            "## Kernel floor (every case)",
            "",
            "The time of each case's two matrix products per iteration in skvi's "
            "expanded layout alone (values and statistics, chunks of "
            f"{FLOOR_CHUNK_ROWS} rows, best of {FLOOR_REPEATS}); each fit's "
            "median time as a multiple of it.",
            "",
            *kernel_floors,
        )
    report.emit(
        "",
        f"Total time {total:.0f} s. Load average at end (1, 5, 15 min): "
        f"{load_average()}.",
    )
    if args.output:
        report.write(args.output)


def run_layouts(args):
    """Time both layouts in a one-thread child and fit their cost model."""
    report = Report()
    info = run_child({"kind": "info"})
    report.emit("## Machine", "", *machine_lines(info), "")
    start = time.perf_counter()
    answer = run_child({"kind": "layouts"})
    report.emit(
        "## Layouts of full precisions",
        "",
        f"One E-step pass over {LAYOUT_ROWS:_} rows, one thread, best of "
        f"{LAYOUT_REPEATS} (process time), per row.",
        "",
        *layout_lines(answer),
        "",
        f"Total time {time.perf_counter() - start:.0f} s. Load average at end "
        f"(1, 5, 15 min): {load_average()}.",
    )
    if args.output:
        report.write(args.output)


def main(argv=None):
    args = parse_args(argv)
    if args.child is not None:
        child_main(args.child)
    elif args.layouts:
        run_layouts(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
