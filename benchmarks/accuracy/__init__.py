"""Accuracy on simulated frames and of the code itself: counting, counting rules, INT8, export agreement, labeller
settings, the mutation check, and exports read back by the labelling tools' own readers."""
