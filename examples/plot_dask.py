r"""
=====================================================
Fitting a Dask array on a LocalCluster
=====================================================

A :class:`dask.array.Array` passed to ``fit`` stays where it is: each
iteration maps the E-step over the blocks on the workers, each block
returns its sufficient statistics (a few numbers per component), a tree
reduction adds them up, and the M-step runs on the client. Predictions come
back as lazy Dask arrays.

This example starts a local cluster, generates two million rows lazily on
it, fits :class:`skvi.EMGaussianMixture` to the Dask array and to the same
rows in memory from the same start, and plots the two ELBO traces: they
coincide, as the tests check to 1e-10. (The example uses threads for its
workers so that it runs anywhere; ``LocalCluster(n_workers=2)`` with worker
processes, or a real cluster's address, runs the same code.)
"""

# %%
# A cluster and lazily generated data
# -----------------------------------
import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster

from skvi import EMGaussianMixture

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False)
client = Client(cluster)

n_rows, n_blocks = 2_000_000, 8
centers = da.from_array(np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]]))
state = da.random.RandomState(0)
labels = state.randint(0, 3, size=n_rows, chunks=n_rows // n_blocks)
noise = state.standard_normal((n_rows, 2), chunks=(n_rows // n_blocks, 2))
X = centers[labels] + noise
print(X)

# %%
# The same fit, distributed and in memory
# ---------------------------------------
# Starting both fits from the same parameters makes them comparable
# iteration by iteration (without a start, the Dask fit initialises from a
# sample of rows, the in-memory fit from all of them).
start = dict(
    weights_init=np.full(3, 1 / 3),
    means_init=np.array([[-1.0, -1.0], [5.0, 0.0], [0.0, 4.0]]),
    precisions_init=np.tile(np.eye(2), (3, 1, 1)),
)
distributed_fit = EMGaussianMixture(n_components=3, tol=1e-6, **start).fit(X)
in_memory = EMGaussianMixture(n_components=3, tol=1e-6, **start).fit(X.compute())
gap = np.max(np.abs(distributed_fit.means_ - in_memory.means_))
print(f"iterations: {distributed_fit.n_iter_} and {in_memory.n_iter_}")
print(f"largest difference between the fitted means: {gap:.1e}")

# Predictions stay lazy until asked for.
lazy_labels = distributed_fit.predict(X)
print(type(lazy_labels).__name__, np.bincount(lazy_labels[:100_000].compute()))

# %%
# The ELBO traces
# ---------------
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(distributed_fit.lower_bounds_, "o-", label="Dask array, 2 workers")
ax.plot(in_memory.lower_bounds_, "x--", label="NumPy array in memory")
ax.set_xlabel("iteration")
ax.set_ylabel("ELBO per sample (= log-likelihood)")
ax.set_title("One algorithm, two data sources")
ax.legend()
fig.tight_layout()
plt.show()

client.close()
cluster.close()
