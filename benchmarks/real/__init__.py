"""Real images: counts on the real smears and label-free cells, the paper's method trained on them, and the
experiment (paper Tables 2 and 3 at CPU scale)."""
