"""Test session setup."""

import os

# scikit-learn's estimator checks run their array-API check (numpy namespace
# only, since skvi does not claim array-API support) only when scipy is in
# array-API mode, which must be chosen before scipy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
