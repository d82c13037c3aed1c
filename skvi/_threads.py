"""Threads for the chunk loops: one BLAS thread per product, chunks in parallel.

The kernel's matrix products are small (one cache-sized chunk of rows each).
A BLAS's own threads spin and wait on products that size, and on a machine
where another process is busy a waiting thread loses its core for whole
time slices: a fit beside one busy process ran 30 times longer. So every
chunk loop runs with one BLAS thread (:func:`one_blas_thread`), and uses
the cores there are by handing whole chunks to a small pool of threads
instead (:func:`map_in_order`; NumPy releases the GIL in its products and
element-wise loops).

How many threads a loop uses (:func:`chunk_workers`) follows the limits
already in place, so that skvi never oversubscribes the machine:

* the BLAS's own thread count, as threadpoolctl reports it: a user's
  ``threadpoolctl.threadpool_limits(1)`` or ``OPENBLAS_NUM_THREADS=1``, and
  joblib's limits in its worker processes (``GridSearchCV(n_jobs=...)``),
  also limit skvi;
* the CPUs this process may use (``joblib.cpu_count``: affinity and cgroup
  quotas);
* one thread when called from any thread but the main one: inside Dask's or
  joblib's threaded workers, or a pool of the user's, whoever made the
  threads has already decided the parallelism;
* enough memory: the workers' chunks together stay within scikit-learn's
  ``working_memory``.

Results do not depend on the number of threads: each chunk's sums are
computed on their own and added up in chunk order (see
:func:`skvi._stats.chunked_pass`).
"""

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from joblib import cpu_count
from sklearn import get_config
from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
# The BLAS libraries' controller (finding them costs milliseconds).
_controller = None
# How many chunk loops hold the one-thread limit now, the limiter that
# restores the libraries' previous settings when the last of them leaves,
# and the thread count those settings allowed.
_holders = 0
_limiter = None
_previous_threads = None
# The pool, its size and the process that made it (a fork leaves its
# threads behind).
_pool = None
_pool_size = 0
_pool_pid = None
# joblib's count of usable CPUs and the process it was read in: reading it
# (affinity, cgroup quota files) costs about 60 microseconds, as much as a
# small chunk's work, and every pass asks.
_cpus = None
_cpus_pid = None
# The interpreter's switch interval (seconds) while workers share the GIL:
# a worker that waits for it asks the holder to let go after this long
# (CPython's default, 5 ms, is much longer than a chunk's NumPy calls). A
# two-thread EM fit (200,000 x 10, K = 8, full) took 0.19 s with 0.5 ms
# against 0.21 s with 5 ms (one thread 0.31 s); 0.1-1 ms did alike.
SWITCH_INTERVAL = 5e-4


def _blas():
    global _controller
    if _controller is None:
        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def _usable_cpus():
    """``joblib.cpu_count()``, read once per process."""
    global _cpus, _cpus_pid
    if _cpus is None or _cpus_pid != os.getpid():
        _cpus, _cpus_pid = cpu_count(), os.getpid()
    return _cpus


def _blas_threads(controller):
    """The fewest threads any loaded BLAS allows (None without a BLAS)."""
    counts = [library.num_threads for library in controller.lib_controllers]
    return min(counts) if counts else None


@contextmanager
def one_blas_thread():
    """Run the body with every BLAS library limited to one thread.

    Nested and concurrent uses (Dask's threads running blocks at the same
    time) share one limit, set by the first and lifted by the last, so the
    caller's settings always come back.
    """
    global _holders, _limiter, _previous_threads
    with _lock:
        if _holders == 0:
            controller = _blas()
            _previous_threads = _blas_threads(controller)
            _limiter = controller.limit(limits=1)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                _limiter.restore_original_limits()
                _limiter = _previous_threads = None


def chunk_workers(chunks, row_bytes):
    """How many threads a loop over ``chunks`` (slices of rows) should use.

    See the module docstring; ``row_bytes`` is the memory of one row's work
    arrays.
    """
    if len(chunks) < 2 or threading.current_thread() is not threading.main_thread():
        return 1
    with _lock:
        allowed = _previous_threads if _holders else _blas_threads(_blas())
    workers = min(len(chunks), _usable_cpus())
    if allowed is not None:
        workers = min(workers, allowed)
    longest = max(rows.stop - rows.start for rows in chunks)
    memory = get_config()["working_memory"] * 2**20
    workers = min(workers, memory // max(row_bytes * longest, 1))
    return max(int(workers), 1)


def _executor(workers):
    """The shared pool, with at least ``workers`` threads."""
    global _pool, _pool_size, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_size < workers:
            # The threads of an older pool exit once it is unreferenced and
            # idle; a forked child's copy has no threads at all.
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="skvi-chunks")
            _pool_size, _pool_pid = workers, os.getpid()
        return _pool


def map_in_order(function, items, workers, consume):
    """``consume(function(item))`` for each item, in the order of ``items``.

    With more than one worker, ``function`` runs on the shared pool and must
    be safe to call from several threads at once. The workers take the items
    themselves and, under one lock, consume every finished result whose
    turn has come, so ``consume`` sees the results in the order of
    ``items`` (one call at a time, in whichever worker's thread) and the
    calling thread only waits for the end: a calling thread that handed out
    and consumed each item itself woke for every one of them, and on a
    2-core machine its wake-ups and the GIL it took cost a two-thread fit a
    third of its CPU time on top of the work. A worker starts an item at
    most ``2 * workers`` ahead of the next to consume, so few results wait
    in memory. Meanwhile the interpreter's switch interval is at most
    ``SWITCH_INTERVAL`` (process-wide, as the BLAS limit; put back after).
    An exception from either stops the loop and is raised once nothing runs
    any more.
    """
    if workers <= 1:
        for item in items:
            consume(function(item))
        return
    run = _OrderedRun(list(items), function, consume, window=2 * workers)
    pool = _executor(workers)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
    try:
        futures = [pool.submit(run.work) for _ in range(workers)]
        for future in futures:
            future.exception()
    except BaseException as error:
        # Interrupted while waiting (Ctrl-C): the workers stop after their
        # current item.
        run.stop(error)
        raise
    finally:
        sys.setswitchinterval(interval)
    if run.error is not None:
        raise run.error


class _OrderedRun:
    """The shared state of one :func:`map_in_order` over several workers."""

    def __init__(self, items, function, consume, window):
        self.items, self.function, self.consume = items, function, consume
        self.window = window
        self.changed = threading.Condition(threading.Lock())
        # The next item to start and the next result to consume.
        self.started = self.consumed = 0
        self.finished = {}
        self.error = None

    def work(self):
        """Start items and consume results in turn until none is left."""
        changed = self.changed
        while True:
            with changed:
                while (
                    self.error is None
                    and self.started < len(self.items)
                    and self.started >= self.consumed + self.window
                ):
                    changed.wait()
                if self.error is not None or self.started == len(self.items):
                    return
                index = self.started
                self.started += 1
            try:
                result = self.function(self.items[index])
            except BaseException as error:
                self.stop(error)
                return
            with changed:
                self.finished[index] = result
                try:
                    while self.error is None and self.consumed in self.finished:
                        self.consume(self.finished.pop(self.consumed))
                        self.consumed += 1
                except BaseException as error:
                    self.error = error
                changed.notify_all()

    def stop(self, error):
        """Start no more items; ``error`` is raised unless one came first."""
        with self.changed:
            if self.error is None:
                self.error = error
            self.changed.notify_all()


def for_each_chunk(function, chunks, row_bytes):
    """``function(rows)`` for every slice in ``chunks``, split over threads.

    For work whose results do not depend on the order (rows written to
    their own place in an output array); ``row_bytes`` as in
    :func:`chunk_workers`.
    """
    workers = chunk_workers(chunks, row_bytes)
    with one_blas_thread():
        map_in_order(function, chunks, workers, _ignore)


def _ignore(result):
    pass
