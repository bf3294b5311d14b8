"""Datasets: the project's on-disk format and count-only datasets, the simulated microscope and the datasets made
from it, the optics of an image (`modality`), rescaling to another pixel size, and the annotation formats of other
tools (`annotations`)."""
