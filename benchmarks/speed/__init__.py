"""Speed: counting, labelling, the simulator, end-to-end ratios, soak, the web view under load, engine builds, and
the GPU scripts (run on a GPU box)."""
