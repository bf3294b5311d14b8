"""`csc-run`'s engine: capture → inference → counting in threads (`stream`), frames of any size through a
fixed-size model (`tiling`), overlays, the check that frames look like the model's training data (`domain`), and
running statistics that keep no per-frame list.

`Pipeline` and `RunOptions` can be imported from here (`from runtime.pipeline import Pipeline`); they load on
first use, so that `runtime.pipeline.tiling` and the others import alone.
"""
__all__ = ["Pipeline", "RunOptions"]


def __getattr__(name: str):
    if name in __all__:
        from runtime.pipeline import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'runtime.pipeline' has no attribute {name!r}")
