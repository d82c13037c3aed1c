"""Default threads, quiet and beside a busy process: skvi next to scikit-learn.

Users fit with their BLAS's default threads, in notebooks beside other work.
This benchmark times one EM fit (200,000 x 10, K = 8, full covariances,
exactly 10 iterations from the same starting parameters) three ways:

* ``skvi``: default threads (skvi decides, see ``docs/speed.rst``);
* ``skvi 1 thread``: inside ``threadpoolctl.threadpool_limits(1)``, which
  also keeps skvi's own chunk threads to one;
* ``sklearn``: ``GaussianMixture`` with default threads;

each in two conditions: *quiet* (nothing of ours running beside it) and
*busy* (one other process spinning a pure-Python loop on one core for the
whole block). Every fit runs in a fresh process with the parent's
environment minus any ``*_NUM_THREADS`` setting, after an untimed warm-up
fit on the first rows; the fits of one repeat are interleaved (the order of
the three alternates between repeats) and the medians over ``--repeats`` are
reported. The load average is printed, since "quiet" means only that this
benchmark adds no load.

Each child also times a second, identical fit right after the first: the
first fit of a process pays one-time costs that the warm-up on a few rows
does not (the chunk threads start and touch their work arrays for the
first time), which a later fit, or a longer one, does not pay again; the
report gives the two-threads-over-one ratio of both.

Usage::

    python benchmarks/bench_threads.py                  # 5 repeats, ~10 min
    python benchmarks/bench_threads.py --repeats 1      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from bench_vs_sklearn import (
    THREAD_VARIABLES,
    WARM_UP_ROWS,
    Case,
    estimator_classes,
    load_init,
    make_blobs,
    make_estimator,
    run_child,
    starting_parameters,
)
from threadpoolctl import threadpool_info, threadpool_limits

CASE = Case("threads", "EM", "full", "float64", 200_000, 10, 8, seed=11)
MAX_ITER = 10
VARIANTS = ("skvi", "skvi 1 thread", "sklearn")
CONDITIONS = ("quiet", "busy")
BUSY_LOOP = "while True:\n    sum(range(10000))"


def child_environment():
    """The parent's environment without thread-count settings.

    The checkout this script belongs to comes first on the path, so the
    skvi measured is this one, installed or not.
    """
    environment = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    root = str(Path(__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [root, environment.get("PYTHONPATH")])
    )
    return environment


def child_main(encoded):
    """Time one fit; print the seconds and the score as a JSON line."""
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    task = json.loads(encoded)
    library = "sklearn" if task["variant"] == "sklearn" else "skvi"
    fit_task = {
        "library": library,
        "estimator": CASE.estimator,
        "covariance": CASE.covariance,
        "k": CASE.k,
        "prior_type": None,
    }
    classes = estimator_classes()
    X = np.load(task["data"])
    init = load_init(task["init"])
    limit = 1 if task["variant"] == "skvi 1 thread" else None
    with threadpool_limits(limit):
        make_estimator(classes, fit_task, init, max_iter=1).fit(X[:WARM_UP_ROWS])
        times = []
        for _ in range(2):
            estimator = make_estimator(classes, fit_task, init, MAX_ITER)
            start = time.perf_counter()
            estimator.fit(X)
            times.append(time.perf_counter() - start)
            if estimator.n_iter_ != MAX_ITER:
                raise RuntimeError(f"{library} ran {estimator.n_iter_} iterations")
        threads = [pool["num_threads"] for pool in threadpool_info()]
    answer = {"seconds": times[0], "again": times[1]}
    answer["score"] = float(estimator.score(X))
    answer["pools"] = threads
    print(json.dumps(answer), flush=True)


def measure(paths, repeats):
    seconds = {(c, v): [] for c in CONDITIONS for v in VARIANTS}
    # The second fit in the same process (see the module docstring).
    seconds.update({(c, v, "again"): [] for c in CONDITIONS for v in VARIANTS})
    scores = {v: [] for v in VARIANTS}
    for repeat in range(repeats):
        order = VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]
        for condition in CONDITIONS:
            busy = None
            if condition == "busy":
                busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
            try:
                for variant in order:
                    answer = run_child(
                        {"variant": variant, **paths},
                        script=__file__,
                        environment=child_environment(),
                    )
                    seconds[condition, variant].append(answer["seconds"])
                    seconds[condition, variant, "again"].append(answer["again"])
                    scores[variant].append(answer["score"])
                    print(
                        f"repeat {repeat + 1} {condition:5s} {variant:14s} "
                        f"{answer['seconds']:7.2f} s  load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    return seconds, scores


def report(seconds, scores, repeats):
    median = {key: statistics.median(values) for key, values in seconds.items()}
    lines = [
        f"200,000 x 10, K = 8, EM full, {MAX_ITER} iterations from the same start; "
        f"medians of {repeats} interleaved repeats, one process per fit, default "
        f"threads ({os.cpu_count()} CPUs; load average at the end "
        f"{os.getloadavg()[0]:.1f}).",
        "",
        "| variant | quiet | busy | busy / quiet |",
        "|---|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        quiet, busy = median["quiet", variant], median["busy", variant]
        lines.append(
            f"| {variant} | {quiet:.2f} s | {busy:.2f} s | {busy / quiet:.2f} |"
        )
    lines += [
        "",
        "| ratio | quiet | busy |",
        "|---|---:|---:|",
    ]
    for label, num, den in (
        ("sklearn / skvi", "sklearn", "skvi"),
        ("skvi 1 thread / skvi", "skvi 1 thread", "skvi"),
    ):
        cells = [f"{median[c, num] / median[c, den]:.2f}x" for c in CONDITIONS]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
        cells = [
            f"{median[c, num, 'again'] / median[c, den, 'again']:.2f}x"
            for c in CONDITIONS
        ]
        lines.append(f"| {label}, second fit | {cells[0]} | {cells[1]} |")
    spread = {v: max(s) - min(s) for v, s in scores.items()}
    lines += ["", f"Spread of the final scores per variant: {spread}."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child is not None:
        child_main(args.child)
        return
    with tempfile.TemporaryDirectory() as folder:
        X = make_blobs(CASE.n, CASE.d, CASE.k, CASE.seed)
        paths = {"data": str(Path(folder) / "X.npy"), "init": None}
        np.save(paths["data"], X)
        paths["init"] = str(Path(folder) / "init.npz")
        with threadpool_limits(1):
            np.savez(paths["init"], **starting_parameters(CASE, X))
        seconds, scores = measure(paths, args.repeats)
    text = report(seconds, scores, args.repeats)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
