"""Images and frames in, results out: image reading (any depth, EXIF orientation) and atomic writes, the frame
sources of `csc-run`, the counts/cells CSV and JSON writers, CSV tables, and the heap setting for per-frame work."""
