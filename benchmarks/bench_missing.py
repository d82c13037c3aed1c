"""The cost of missing entries: fits with NaN against complete-data fits.

For each covariance type, EM fits the same n x d blobs with 0%, 10% and 30%
of the entries missing completely at random, from the same starting
parameters, for exactly ``--max-iter`` iterations. Every fit runs in its
own process with one BLAS thread; fractions alternate within each repeat;
medians of ``--repeats``. The ratio is the time of the fit with missing
entries over that of the complete-data fit of the same size; on a shared
machine the ratio of CPU times (``time.process_time`` of the fitting
process) is the steadier one, and both are reported.

The fits import the ``skvi`` of this checkout, or the one ``PYTHONPATH``
names. With ``--compare DIR`` every fit also runs with the ``skvi`` of the
checkout DIR, the two alternating fit by fit (and which goes first
alternating too), so that both see the same load on a shared machine; the
table then has a row per covariance type and checkout, and the last
column is this checkout's time over DIR's for the fit with missing entries.

Usage::

    python benchmarks/bench_missing.py                  # 100k x 16, K=8
    python benchmarks/bench_missing.py --rows 20_000 --repeats 1
    python benchmarks/bench_missing.py --fractions 0,0.1      # 10% only
    python benchmarks/bench_missing.py --fractions 0,0.1 --compare ../base
    python benchmarks/bench_missing.py --fractions 0,0.1 --warm

With ``--warm`` every fit runs in this one process instead, after one
untimed fit per covariance type and fraction (imports, numba's compiled
code loaded from its cache, work arrays): the CPU time of the fit alone
(``time.process_time``), fractions alternating, medians of ``--repeats``.
On a machine shared with other busy processes this is the steadier
measure of what a fit costs once running; the default mode also counts
what a fresh process pays. Compare checkouts by running the script once
per checkout (``PYTHONPATH``), alternating the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--covariance-types", default="full,tied,diag,spherical", help="comma list"
    )
    parser.add_argument(
        "--fractions",
        default="0,0.1,0.3",
        help="comma list of missing fractions; the first is the reference",
    )
    parser.add_argument(
        "--compare",
        metavar="DIR",
        help="another checkout whose skvi is timed interleaved with this one's",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="time every fit in this one warm process (CPU time; no --compare)",
    )
    parser.add_argument("--output", help="also write the table (markdown) here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(data_file, covariance_type, max_iter):
    """One timed fit; prints its seconds as JSON."""
    import warnings

    from threadpoolctl import threadpool_limits

    from skvi import EMGaussianMixture

    warnings.simplefilter("ignore")
    saved = np.load(data_file)
    X, start = saved["X"], {key: saved[key] for key in ("w", "m", "p")}
    model = EMGaussianMixture(
        start["w"].size,
        covariance_type=covariance_type,
        max_iter=int(max_iter),
        tol=0.0,
        weights_init=start["w"],
        means_init=start["m"],
        precisions_init=start["p"],
    )
    with threadpool_limits(1):
        began, began_cpu = time.perf_counter(), time.process_time()
        model.fit(X)
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - began_cpu
    print(json.dumps({"seconds": seconds, "cpu": cpu_seconds, "n_iter": model.n_iter_}))


def warm_fit(path, covariance_type, max_iter):
    """CPU seconds of one fit in this process (see ``--warm``)."""
    import warnings

    from skvi import EMGaussianMixture

    saved = np.load(path)
    model = EMGaussianMixture(
        saved["w"].size,
        covariance_type=covariance_type,
        max_iter=int(max_iter),
        tol=0.0,
        weights_init=saved["w"],
        means_init=saved["m"],
        precisions_init=saved["p"],
    )
    X = saved["X"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        began = time.process_time()
        model.fit(X)
        return time.process_time() - began


def write_cases(args, fractions, directory):
    """One data file per covariance type and fraction, with its start."""
    from skvi import EMGaussianMixture

    rng = np.random.default_rng(0)
    k, d = args.components, args.features
    centers = rng.normal(scale=4.0, size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    labels = rng.integers(k, size=args.rows)
    X = centers[labels] + scales[labels] * rng.standard_normal((args.rows, d))
    hidden = rng.uniform(size=X.shape)
    files = {}
    for covariance_type in args.covariance_types.split(","):
        start = EMGaussianMixture(
            k,
            covariance_type=covariance_type,
            max_iter=1,
            init_params="random_from_data",
            random_state=0,
        ).fit(X)
        for fraction in fractions:
            path = Path(directory) / f"{covariance_type}-{fraction}.npz"
            np.savez(
                path,
                X=np.where(hidden < fraction, np.nan, X),
                w=start.weights_,
                m=start.means_,
                p=start.precisions_,
            )
            files[covariance_type, fraction] = path
    return files


def run_child(path, covariance_type, max_iter, checkout=None):
    """Seconds and CPU seconds of one fit, with the skvi of ``checkout``.

    Without a checkout, that of ``PYTHONPATH`` or else of this one.
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if checkout is not None:
        env["PYTHONPATH"] = str(Path(checkout).resolve())
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, __file__, "--child", str(path), covariance_type]
    result = subprocess.run(
        command + [str(max_iter)], env=env, capture_output=True, text=True, check=True
    )
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    return timing["seconds"], timing["cpu"]


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child(*args.child)
        return
    fractions = [float(f) for f in args.fractions.split(",")]
    reference, others = fractions[0], fractions[1:]
    names = [f"{f:.0%} missing" for f in others]
    checkouts = [None] if args.compare is None else [None, args.compare]
    labels = {None: "this", args.compare: f"`{args.compare}`"}
    header = (
        "| covariance | "
        + " | ".join([f"{reference:.0%} missing"] + names)
        + " | "
        + " | ".join([f"ratio {f:.0%}" for f in others])
        + " | "
        + " | ".join([f"CPU ratio {f:.0%}" for f in others])
        + " |"
    )
    separator = "|---|" + "---:|" * (1 + 3 * len(others))
    if args.compare is not None:
        header += " checkout | "
        header += " | ".join(f"CPU this/other {f:.0%}" for f in others) + " |"
        separator += "---|" + "---:|" * len(others)
    lines = [
        "## Missing entries",
        "",
        f"- Machine: {platform.platform()}, os.cpu_count() = {os.cpu_count()}",
        f"- EM, n = {args.rows:_}, d = {args.features}, K = {args.components}, "
        f"{args.max_iter} iterations from identical starts, entries missing "
        f"completely at random; one process per fit, one BLAS thread, median "
        f"of {args.repeats}. Ratios are over the fit with {reference:.0%} "
        "missing; CPU ratios compare the fitting processes' CPU times.",
        "",
        header,
        separator,
    ]
    if args.warm:
        lines.insert(
            -3,
            "- `--warm`: instead, every fit in this one process after an untimed "
            "one per case; times are CPU seconds of the fit (`time.process_time`).",
        )
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as directory:
        files = write_cases(args, fractions, directory)
        if args.warm:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):
                for covariance_type in args.covariance_types.split(","):
                    lines.append(warm_row(args, files, covariance_type, fractions))
                    print(lines[-1], flush=True)
            checkouts = []
        for covariance_type in args.covariance_types.split(",") if checkouts else []:
            times = {(c, f): [] for c in checkouts for f in fractions}
            cpu = {(c, f): [] for c in checkouts for f in fractions}
            for repeat in range(args.repeats):
                order = fractions if repeat % 2 == 0 else fractions[::-1]
                for position, fraction in enumerate(order):
                    # Which checkout goes first alternates fit by fit.
                    turn = checkouts if position % 2 == 0 else checkouts[::-1]
                    for checkout in turn:
                        path = files[covariance_type, fraction]
                        seconds, cpu_seconds = run_child(
                            path, covariance_type, args.max_iter, checkout
                        )
                        times[checkout, fraction].append(seconds)
                        cpu[checkout, fraction].append(cpu_seconds)
            median = {key: float(np.median(t)) for key, t in times.items()}
            cpu_median = {key: float(np.median(t)) for key, t in cpu.items()}
            for checkout in checkouts:
                seconds = {f: median[checkout, f] for f in fractions}
                cpu_seconds = {f: cpu_median[checkout, f] for f in fractions}
                cells = [f"{seconds[f]:.2f} s" for f in fractions]
                cells += [f"**{seconds[f] / seconds[reference]:.1f}x**" for f in others]
                cells += [
                    f"{cpu_seconds[f] / cpu_seconds[reference]:.1f}x" for f in others
                ]
                if args.compare is not None:
                    cells.append(labels[checkout])
                    cells += [
                        f"{cpu_median[None, f] / cpu_median[args.compare, f]:.2f}"
                        if checkout is None
                        else ""
                        for f in others
                    ]
                row = f"| {covariance_type} | " + " | ".join(cells) + " |"
                lines.append(row)
                print(row, flush=True)
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")


def warm_row(args, files, covariance_type, fractions):
    """The table row of one covariance type, every fit in this process."""
    reference, others = fractions[0], fractions[1:]
    for fraction in fractions:  # untimed: imports, compiled code, work arrays
        warm_fit(files[covariance_type, fraction], covariance_type, args.max_iter)
    cpu = {fraction: [] for fraction in fractions}
    for repeat in range(args.repeats):
        for fraction in fractions if repeat % 2 == 0 else fractions[::-1]:
            path = files[covariance_type, fraction]
            cpu[fraction].append(warm_fit(path, covariance_type, args.max_iter))
    median = {f: float(np.median(t)) for f, t in cpu.items()}
    cells = [f"{median[f]:.3f} s" for f in fractions]
    cells += [f"**{median[f] / median[reference]:.1f}x**" for f in others]
    cells += [f"{median[f] / median[reference]:.2f}x" for f in others]
    return f"| {covariance_type} | " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
