r"""
=====================================================
Streaming minibatches with partial_fit
=====================================================

:meth:`skvi.EMGaussianMixture.partial_fit` takes one step of online EM per
minibatch: the minibatch's sufficient statistics, under the current
parameters, are blended into running statistics with step size
:math:`\rho_t = (10 + t)^{-0.7}`, and the parameters are their M-step.
:class:`skvi.VariationalGaussianMixture` does the same as stochastic
variational inference, scaling the running statistics to ``total_samples``
rows.

This example streams 200,000 rows of a four-component mixture in shuffled
minibatches of 1,000 rows, five passes over the data, and plots the
per-sample log-likelihood of held-out data after every pass against the
batch ``fit`` of the same rows.
"""

# %%
# Data: four overlapping clusters
# -------------------------------
import matplotlib.pyplot as plt
import numpy as np

from skvi import EMGaussianMixture, VariationalGaussianMixture

rng = np.random.default_rng(0)
centers = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [4.0, 4.0]])
spreads = np.array([0.7, 1.2, 1.0, 0.5])


def draw(n_rows):
    labels = rng.integers(4, size=n_rows)
    return centers[labels] + spreads[labels, None] * rng.standard_normal((n_rows, 2))


X, held_out = draw(200_000), draw(20_000)

# %%
# Batch fits, then the streams
# ----------------------------
# Each stream sees every row once per pass, in a new random order.
batch_size, n_passes = 1_000, 5
models = {
    "EM": EMGaussianMixture(n_components=4, random_state=0),
    "VI": VariationalGaussianMixture(
        n_components=4, random_state=0, total_samples=len(X)
    ),
}
batch_scores, stream_scores = {}, {}
for name, model in models.items():
    batch_scores[name] = model.fit(X).score(held_out)
    stream = type(model)(**model.get_params())
    scores = []
    for _ in range(n_passes):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            stream.partial_fit(X[order[start : start + batch_size]])
        scores.append(stream.score(held_out))
    stream_scores[name] = scores
    gap = abs(scores[-1] - batch_scores[name]) / abs(batch_scores[name])
    print(
        f"{name}: batch {batch_scores[name]:.4f}, stream after {n_passes} passes "
        f"{scores[-1]:.4f} (relative gap {gap:.1e}, {stream.n_iter_} steps)"
    )

# %%
# The held-out score per pass
# ---------------------------
# After the first pass the streams are already within a fraction of a
# percent of the batch fits; later passes refine them as the steps shrink.
fig, ax = plt.subplots(figsize=(6, 3.5))
passes = np.arange(1, n_passes + 1)
for (name, scores), color in zip(stream_scores.items(), ["C0", "C1"], strict=True):
    ax.plot(passes, scores, "o-", color=color, label=f"{name}, partial_fit")
    ax.axhline(batch_scores[name], color=color, ls="--", label=f"{name}, batch fit")
ax.set_xlabel("pass over the data")
ax.set_ylabel("held-out log-likelihood per sample")
ax.set_xticks(passes)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
