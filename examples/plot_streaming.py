r"""
=====================================================
Streaming minibatches with partial_fit
=====================================================

:meth:`skvi.EMGaussianMixture.partial_fit` takes one step of online EM per
minibatch: the minibatch's sufficient statistics, under the current
parameters, are blended into running statistics with step size
:math:`\rho_t = \max(m_t / M_t, (10 + t)^{-0.7})`, where :math:`m_t` is the
minibatch's rows and :math:`M_t` the rows seen so far (exact running
averages for the first few minibatches), and the parameters are their
M-step.
:class:`skvi.VariationalGaussianMixture` does the same as stochastic
variational inference, scaling the running statistics to ``total_samples``
rows.

This example streams 200,000 rows of a four-component mixture in shuffled
minibatches of 1,000 rows, five passes over the data, and plots the
per-sample log-likelihood of held-out data as the rows stream in, against
the batch ``fit`` of the same rows.
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
batch_scores, traces = {}, {}
for name, model in models.items():
    batch_scores[name] = model.fit(X).score(held_out)
    stream = type(model)(**model.get_params())
    seen, scores = [], []
    for _ in range(n_passes):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            stream.partial_fit(X[order[start : start + batch_size]])
            if stream.n_iter_ % 10 == 0:
                seen.append(stream.n_iter_ * batch_size)
                scores.append(stream.score(held_out))
    traces[name] = (np.array(seen), np.array(scores))
    gap = abs(scores[-1] - batch_scores[name]) / abs(batch_scores[name])
    print(
        f"{name}: batch {batch_scores[name]:.5f}, stream after {n_passes} passes "
        f"{scores[-1]:.5f} (relative gap {gap:.1e}, {stream.n_iter_} steps)"
    )

# %%
# The held-out score as the rows stream in
# ----------------------------------------
# Within the first pass the streams come within a fraction of a percent of
# the batch fits; later passes, with smaller steps, refine them. The
# remaining wiggles, of order 1e-5 relative, are the minibatch noise.
fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
for (name, (seen, scores)), color in zip(traces.items(), ["C0", "C1"], strict=True):
    gap = 100 * (scores - batch_scores[name]) / abs(batch_scores[name])
    top.plot(seen / len(X), scores, color=color, label=f"{name}, partial_fit")
    top.axhline(batch_scores[name], color=color, ls="--", label=f"{name}, batch fit")
    bottom.plot(seen / len(X), gap, color=color, label=name)
bottom.axhline(0.0, color="k", lw=0.8)
top.set_ylabel("held-out log-likelihood\nper sample")
top.ticklabel_format(axis="y", useOffset=False)
top.legend(fontsize=8)
bottom.set_xscale("log")
bottom.set_yscale("symlog", linthresh=1e-3)
bottom.set_xlabel("passes over the data (rows seen / 200,000)")
bottom.set_ylabel("difference from the\nbatch fit (%)")
bottom.legend(fontsize=8)
fig.tight_layout()
plt.show()
