"""skvi on a Dask cluster: time per iteration and memory per worker.

Two measurements on a ``distributed.LocalCluster`` of two worker processes
with one thread each:

1. **Large**: ``--large-rows`` rows (10^8 by default) generated lazily on
   the workers, never held anywhere whole: every pass regenerates them from
   the graph. EM with given starting parameters runs ``--iterations``
   iterations; the script reports the time per pass and the peak resident
   memory of each worker (``ru_maxrss``) and of the client.
2. **Against memory**: ``--medium-rows`` rows (10^7) that fit in memory, as
   a NumPy array fitted in this process (one BLAS thread) and as a Dask
   array of the same rows persisted on the workers; the script reports both
   times per iteration and their ratio.

EM's fit makes ``iterations + 1`` passes (it ends with an E-step); the time
per pass is the fit's time divided by that. Usage::

    python benchmarks/bench_dask.py                     # 10^8 and 10^7 rows
    python benchmarks/bench_dask.py --large-rows 20_000_000 --medium-rows 2_000_000
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
import warnings

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-rows", type=int, default=100_000_000)
    parser.add_argument("--medium-rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument("--block-rows", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--memory-limit", default="2GiB", help="per worker")
    parser.add_argument("--output", help="also write the report (markdown) here")
    return parser.parse_args(argv)


def blob_rows(n_rows, args, seed):
    """A lazy dask array of mixture rows, generated block by block."""
    import dask.array as da

    rng = np.random.RandomState(seed)
    centers = rng.normal(scale=5.0, size=(args.components, args.features))
    state = da.random.RandomState(seed)
    chunks = (args.block_rows, args.features)
    noise = state.standard_normal((n_rows, args.features), chunks=chunks)
    labels = state.randint(0, args.components, size=n_rows, chunks=args.block_rows)
    return noise + labels.map_blocks(
        lambda block: centers[block], new_axis=1, chunks=(labels.chunks[0], (4,))
    ).rechunk(chunks), centers


def model_for(centers, args):
    from skvi import EMGaussianMixture

    k, d = centers.shape
    return EMGaussianMixture(
        k,
        covariance_type="diag",
        tol=0.0,
        max_iter=args.iterations,
        weights_init=np.full(k, 1.0 / k),
        means_init=centers + 0.5,
        precisions_init=np.full((k, d), 0.5),
    )


def max_rss_bytes():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed_fit(model, X):
    start = time.perf_counter()
    model.fit(X)
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import dask
    import distributed
    from threadpoolctl import threadpool_limits

    import skvi
    from skvi._dask import PERSIST_SHARE

    warnings.simplefilter("ignore")
    lines = [
        "## Dask benchmark",
        "",
        f"- Machine: {platform.platform()}, os.cpu_count() = {os.cpu_count()}",
        f"- skvi {skvi.__version__}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}",
        f"- LocalCluster: 2 worker processes x 1 thread, memory_limit "
        f"{args.memory_limit} each; EM, covariance 'diag', K = {args.components}, "
        f"D = {args.features}, blocks of {args.block_rows:_} rows, "
        f"{args.iterations} iterations ({args.iterations + 1} passes).",
        "",
    ]
    print("\n".join(lines), flush=True)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.memory_limit,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.run(lambda: os.environ.setdefault("OPENBLAS_NUM_THREADS", "1"))
        # 1. Rows generated on the workers at every pass.
        X, centers = blob_rows(args.large_rows, args, seed=0)
        capacity = sum(
            worker["memory_limit"]
            for worker in client.scheduler_info()["workers"].values()
        )
        persisted = X.nbytes <= PERSIST_SHARE * capacity
        start = time.perf_counter()
        dask.compute(X.sum())
        generation = time.perf_counter() - start
        client_before = max_rss_bytes()
        seconds = timed_fit(model_for(centers, args), X)
        worker_peaks = client.run(max_rss_bytes)
        per_pass = seconds / (args.iterations + 1)
        large = [
            f"### {args.large_rows:_} rows, generated on the workers",
            "",
            f"- Data: {X.nbytes / 2**30:.1f} GiB per pass (float64), "
            f"{X.numblocks[0]} blocks; "
            + ("persisted by the fit." if persisted else "regenerated at every pass."),
            f"- Fit: {seconds:.1f} s, **{per_pass:.2f} s per pass** "
            f"({args.large_rows / per_pass / 1e6:.1f} million rows per second); "
            f"generating the rows alone takes {generation:.2f} s of each pass.",
            "- Peak resident memory per worker: "
            + ", ".join(f"{peak / 2**20:.0f} MiB" for peak in worker_peaks.values())
            + f"; client peak {max_rss_bytes() / 2**20:.0f} MiB "
            f"({(max_rss_bytes() - client_before) / 2**20:.0f} MiB more than "
            "before the fit).",
            "",
        ]
        print("\n".join(large), flush=True)

        # 2. The same kind of data in memory and persisted on the workers.
        X, centers = blob_rows(args.medium_rows, args, seed=1)
        local_rows = X.compute()
        X = X.persist()
        distributed.wait(X)
        dask_seconds = timed_fit(model_for(centers, args), X)
        with threadpool_limits(1):
            local_seconds = timed_fit(model_for(centers, args), local_rows)
        passes = args.iterations + 1
        medium = [
            f"### {args.medium_rows:_} rows, in memory and persisted",
            "",
            f"- In memory (NumPy, this process, 1 thread): "
            f"{local_seconds / passes:.2f} s per pass.",
            f"- Dask (2 workers, persisted): {dask_seconds / passes:.2f} s per pass.",
            f"- **Dask / in-memory time per pass: "
            f"{dask_seconds / local_seconds:.2f}**.",
            "",
        ]
        print("\n".join(medium), flush=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines + large + medium) + "\n")


if __name__ == "__main__":
    main()
