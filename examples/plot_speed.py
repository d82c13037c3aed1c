r"""
=====================================================
Speed against scikit-learn
=====================================================

``benchmarks/bench_vs_sklearn.py`` times skvi and scikit-learn side by side:
each fit in its own process with one BLAS thread, exactly 10 iterations from
identical starting parameters, pairs interleaved, medians. This example
reads the results table that the benchmark wrote into
``benchmarks/RESULTS.md`` (it does not rerun it: the full run takes about 20
minutes) and draws the speedup of every case, at the benchmark's size and at
five times as many rows.
"""

# %%
# The table of the most recent run
# --------------------------------
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

try:
    here = Path(__file__).resolve().parent
except NameError:  # run cell by cell, from the examples folder
    here = Path.cwd()
results = (here.parent / "benchmarks" / "RESULTS.md").read_text().splitlines()

start = results.index("## Results")
header = next(line for line in results[start:] if line.startswith("| case"))
columns = [cell.strip() for cell in header.strip("|").split("|")]
speedups = {}
for line in results[results.index(header) + 2 :]:
    if not line.startswith("|"):
        break
    values = [cell.strip() for cell in line.strip("|").split("|")]
    cells = dict(zip(columns, values, strict=True))
    speedups[cells["case"]] = float(cells["speedup"].strip("*x"))
print(speedups)

# %%
# Speedup per case
# ----------------
base = [case for case in speedups if not case.endswith("-x5")]
larger = [speedups.get(case + "-x5", np.nan) for case in base]
positions = np.arange(len(base))
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.barh(positions + 0.2, [speedups[case] for case in base], 0.4, label="as listed")
ax.barh(positions - 0.2, larger, 0.4, label="5x the rows")
ax.axvline(1, color="black", lw=1)
ax.set_yticks(positions, base)
ax.invert_yaxis()
ax.set_xlabel("speedup: scikit-learn time / skvi time (one thread each)")
ax.set_title("10 EM / VI iterations from identical starts")
ax.legend(loc="lower right")
fig.tight_layout()
plt.show()
