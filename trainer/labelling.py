"""Auto-labelling a folder of single-kind images into a dataset, on all cores, skipping bad images."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path

import cv2
import numpy as np

from runtime.data.dataset import DATASET_FILES, META_FILE, DatasetWriter, label_origin, read_meta, write_sample
from runtime.errors import CscError
from runtime.io.heap import keep_freed_memory
from runtime.io.signals import handling
from runtime.classes import DEFAULT_PIXEL_SIZE_UM
from runtime.io.imageio import check_unique_stems, list_images, place_file, read_grey, read_image
from trainer.autolabel import BLANK, MIN_SIDE, AutoLabelConfig, FolderEntry, auto_label, folder_entry, for_folder


@dataclass
class LabelRun:
    out: Path
    labelled: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    polarity: Counter = field(default_factory=Counter)
    modality: Counter = field(default_factory=Counter)
    threshold: Counter = field(default_factory=Counter)
    scale: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    diameters: list[float] = field(default_factory=list)
    folder_modality: tuple[str, int] | None = None  # the folder's optics and how many images took them
    no_cell: list[tuple[str, str]] = field(default_factory=list)  # lit images that gave no cell, with their optics

    @property
    def median_diameter(self) -> float | None:
        return float(np.median(self.diameters)) if self.diameters else None


class LabellingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `label_folder`, raised once the workers have stopped and no unfinished sample is left: how far
    the run got (dataset.json says ``complete: false``)."""

    def __init__(self, labelled: int, total: int):
        super().__init__(f"{labelled} of {total} images labelled")
        self.labelled, self.total = labelled, total


# A worker's copy of the parent's stop signal (`_worker_init`): once set, it takes up no further image.
_stop: Event | None = None


def _stopped() -> bool:
    return _stop is not None and _stop.is_set()


def _label_one(path: Path, config: AutoLabelConfig, out: Path, link: bool,
               entry: FolderEntry | None = None) -> tuple[Path, np.ndarray | None, dict | None, str | None]:
    """Label one image and write its files (in the worker: PNG encoding would otherwise serialise on the parent).

    Returns (path, counts, what the labeller decided, problem); a bad image gives a problem instead of an exception.
    ``entry``: the image's part in the folder's measure (`_entry_of`): its optics and first-pass measures are not
    made again.
    """
    if _stopped():  # the run is over (`_stop_on_exit`): the rest of this worker's chunk is left undone
        return path, None, None, "not labelled: the run stopped"
    try:
        label = auto_label(_read(path, config), config, entry)
        place_file(path, out / "images" / path.name, link=link)
        counts = write_sample(out, path.stem, None, label.mask, label.instances)
        decided = {"modality": label.modality, "diameter_px": label.diameter_px, "scale": label.scale,
                   "threshold": label.threshold, "polarity": label.polarity, "rejected": label.rejected,
                   "cell_px": cv2.countNonZero(label.mask)}
        return path, counts, decided, None
    except CscError as err:
        _remove_sample(out, path)
        return path, None, None, err.reason + (f" — {err.fix}" if err.fix else "")
    except Exception as err:  # one image must never end a folder's run: report it, keep going (--strict stops)
        _remove_sample(out, path)
        return path, None, None, f"labelling failed ({type(err).__name__}: {err}); please report this image"


def _read(path: Path, config: AutoLabelConfig) -> np.ndarray:
    """An image to label, large enough to label (else a CscError that names it)."""
    # The colour step needs colour; otherwise decoding straight to grey is the cheaper read.
    image = read_image(path) if config.channel == "auto" else read_grey(path)
    if min(image.shape[:2]) < MIN_SIDE:
        raise CscError(f"too small to label ({image.shape[1]}×{image.shape[0]} px; at least {MIN_SIDE}×{MIN_SIDE})",
                       path=path)
    return image


def _entry_of(path: Path, config: AutoLabelConfig) -> FolderEntry:
    """One image's part in the folder's measure (in the worker; `folder_entry`); left out where it cannot be read
    (the labelling pass reports it)."""
    if _stopped():
        return FolderEntry(None, False, None)
    try:
        return folder_entry(_read(path, config), config)
    except Exception:  # the labelling pass reads it again and says what is wrong with it
        return FolderEntry(None, False, None)


def _remove_sample(out: Path, path: Path) -> None:
    """Whatever a failed image left in the dataset (its image link, mask, instances): a skipped image leaves none."""
    (out / "images" / path.name).unlink(missing_ok=True)
    for folder in ("masks", "instances"):
        (out / folder / f"{path.stem}.png").unlink(missing_ok=True)


def _worker_init(stop: Event) -> None:
    global _stop
    # Ctrl-C in a terminal reaches the whole process group: the parent alone stops the run (`_stop_on_exit`). A
    # worker interrupted with it went on labelling its queue, left a mask without its instance map, or died
    # holding the task queue's lock and hung the run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop = stop
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would fight them
    keep_freed_memory()


def _workers_start_deaf() -> AbstractContextManager[None]:
    """SIGINT ignored while work is submitted to the pool, which starts its worker processes then: a spawned
    interpreter keeps a SIGINT ignored from its first instruction, while one reached by Ctrl-C before `_worker_init`
    ran (importing this module) died with a traceback. A Ctrl-C in those few milliseconds is lost."""
    return handling(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _first_interrupt_stops(stop: Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM sets ``stop`` and raises KeyboardInterrupt once; later ones, while the run stops, are
    ignored. `timeout -s INT` signals the parent twice (itself, then its process group), and people press twice: a
    second KeyboardInterrupt inside `_stop_on_exit` left the workers labelling and a sample half-written. SIGTERM
    (`timeout`, a batch scheduler's time limit, `kill`) killed the parent on the spot: its samples stayed without a
    dataset.json, which the same command run again refused, and its workers, orphaned, waited forever."""
    def interrupt(signum: int, frame: object) -> None:
        if not stop.is_set():
            stop.set()
            raise KeyboardInterrupt

    with handling(signal.SIGINT, interrupt), handling(signal.SIGTERM, interrupt):
        yield


@contextmanager
def _stop_on_exit(pool: ProcessPoolExecutor, stop: Event, files: list[Path], writer: DatasetWriter) -> Iterator[None]:
    """The run ended early (Ctrl-C, `--strict`'s first bad image): the pool's queued images are cancelled, its
    workers finish the image in hand and stop, and every sample not yet recorded in dataset.json is removed, so that
    the folder holds exactly the samples dataset.json lists. The pool's own exit would have labelled the whole
    queue first."""
    try:
        yield
    except BaseException as err:
        stop.set()
        pool.shutdown(cancel_futures=True)
        for path in files:
            if path.stem not in writer.per_image:
                _remove_sample(writer.root, path)
        if isinstance(err, KeyboardInterrupt):
            raise LabellingInterrupted(len(writer.per_image), len(files)) from None
        raise


def check_folders(images: str | Path, out: str | Path, overwrite: bool = False) -> list[Path]:
    """The images to label; an error, before any work, when there are none, when two share a stem, or when ``out``
    is no place for their dataset (`_check_out`)."""
    files = check_unique_stems(list_images(images))
    source = Path(images).resolve()
    if Path(out).resolve() in (source, *source.parents):
        raise CscError("--out holds the input images", path=out, fix="write the labels to a new folder")
    _check_out(Path(out), overwrite or _relabels(images, Path(out)))
    return files


def _source(images: str | Path) -> str:
    """How dataset.json names a run's input (its ``source``, before the kind)."""
    return f"auto-labels of {Path(images).resolve()}"


def _relabels(images: str | Path, out: Path) -> bool:
    """Whether ``out`` holds this labeller's earlier output of the same input folder: a run again with the same
    command (scripts rerun `csc-label auto DIR --out OUT`) replaces it without `--overwrite`, as it always did, now
    with no stale sample left."""
    meta = read_meta(out) if (out / META_FILE).is_file() else {}
    return label_origin(meta) == "labeller" and str(meta.get("source", "")).startswith(f"{_source(images)} (")


def _check_out(out: Path, overwrite: bool) -> None:
    """``out`` new or empty, or, with ``overwrite``, an earlier output of this labeller: samples written beside
    another dataset's would mix with them (dataset.json describing only the new ones, stale instances/ disagreeing
    with new masks), and a dataset of people's or the simulator's labels is never this labeller's to replace."""
    if out.exists() and not out.is_dir():
        raise CscError("--out is a file, not a folder", path=out, fix="name a new folder for the dataset")
    ours = [name for name in DATASET_FILES if (out / name).exists()]
    if not ours:  # new, empty, or holding other files only (a log, a preview): no samples to mix with
        return
    if not (out / META_FILE).is_file():
        raise CscError(f"--out holds {', '.join(ours)} but no {META_FILE}: a run that was killed, or a dataset "
                       "made by hand", path=out, fix=f"delete {', '.join(ours)} there, or choose a new folder")
    meta = read_meta(out)
    if label_origin(meta) != "labeller":
        raise CscError(f"--out holds a dataset of {label_origin(meta)} labels, which csc-label never replaces",
                       path=out, fix="choose a new folder")
    if not overwrite:
        raise CscError(f"--out already holds {meta.get('source', 'auto-labels')}", path=out,
                       fix="add --overwrite to replace them, or choose a new folder")


def _clear(out: Path) -> None:
    """An earlier output of this labeller (`_check_out`) deleted, so that none of its samples stays among the new."""
    for name in DATASET_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def label_folder(images: str | Path, out: str | Path, config: AutoLabelConfig, *, strict: bool = False,
                 workers: int | None = None, copy_images: bool = False, overwrite: bool = False,
                 on_image: Callable[[], None] | None = None, on_measure: Callable[[], None] | None = None) -> LabelRun:
    """Write ``out/images``, ``out/masks``, ``out/instances`` (when splitting) and ``dataset.json``.

    The folder's images are first measured together (`trainer.autolabel.for_folder`, ``on_measure`` called per
    image): where the scale is to be estimated, an image whose own label-free cells measure much narrower than the
    folder's, or not at all, is labelled at the folder's (`trainer.autolabel.FOLDER_WIDER`); where the optics are
    detected, an image taken for a stain without a stain's colour, in a folder of mostly label-free images, is
    labelled in the folder's optics.

    The images are hard-linked into the dataset where the file system allows (copied otherwise, or always with
    ``copy_images``): no bytes move and no disk is doubled. A link is the same file, so an input edited in place
    changes the dataset's image too; tools that save by writing a new file (most do) leave it alone.

    ``out`` must be new or empty, or hold this labeller's earlier output of the same ``images``, which is replaced;
    ``overwrite`` replaces any earlier output of this labeller there, never another dataset (`_check_out`). Ctrl-C
    or SIGTERM stops the workers after the image in hand and raises `LabellingInterrupted`; ``out`` then holds the
    samples dataset.json lists, ``complete: false``, and no other.
    """
    out = Path(out)
    replaces = overwrite or _relabels(images, out)
    files = check_folders(images, out, replaces)
    if replaces:
        _clear(out)
    run = LabelRun(out)
    workers = workers or os.cpu_count() or 1
    source = f"{_source(images)} (kind={config.kind})"
    per_image: dict[str, dict] = {}
    fixed = config.scaled()
    # spawn, not fork: a forked child inherits OpenCV's thread pool in whatever state it was and can hang.
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    with _first_interrupt_stops(stop), DatasetWriter(
            out, source=source, pixel_size_um=fixed.pixel_size_um if fixed else DEFAULT_PIXEL_SIZE_UM,
            extra={"kind": config.kind, "autolabel": _config_json(config)}) as writer:
        with (ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(stop,),
                                  mp_context=context) as pool, _stop_on_exit(pool, stop, files, writer)):
            n = len(files)
            entries = [FolderEntry(None, False, None)] * n
            if (config.measures_folder or config.votes_optics) and n > 1:
                with _workers_start_deaf():
                    measuring = pool.map(_entry_of, files, [config] * n, chunksize=8)
                entries = _measured(measuring, on_measure)
                config = _for_folder(config, entries, writer, run)
            with _workers_start_deaf():
                results = pool.map(_label_one, files, [config] * n, [writer.root] * n, [not copy_images] * n, entries,
                                   chunksize=8)
            for path, counts, decided, problem in results:
                if on_image is not None:
                    on_image()
                if problem is not None:
                    if strict:
                        raise CscError(problem, path=path, fix="remove or fix it, or drop --strict")
                    run.skipped.append((str(path), problem))
                    writer.skip(str(path), problem)
                    continue
                writer.record(path.stem, counts)
                run.labelled += 1
                run.polarity[decided["polarity"]] += 1
                run.modality[decided["modality"]] += 1
                run.threshold[decided["threshold"]] += 1
                run.rejected.update(decided["rejected"])
                if decided["threshold"] != BLANK:  # a blank frame measured nothing: its size is not evidence
                    run.scale[decided["scale"]] += 1
                    run.diameters.append(decided["diameter_px"])
                    if not decided["cell_px"]:
                        run.no_cell.append((path.name, decided["modality"]))
                per_image[path.stem] = decided
            # Every image is in: a Ctrl-C from here on is ignored (`_first_interrupt_stops`) while the workers are
            # joined and dataset.json finished, milliseconds; it used to end the run with no word and every sample
            # in a dataset.json marked incomplete.
            stop.set()
        _record_decisions(writer, run, per_image, config)
    return run


def _measured(entries: Iterable[FolderEntry], on_measure: Callable[[], None] | None) -> list[FolderEntry]:
    """The folder's measures as they arrive, ``on_measure`` called for each."""
    measured = []
    for entry in entries:
        if on_measure is not None:
            on_measure()
        measured.append(entry)
    return measured


def _for_folder(config: AutoLabelConfig, entries: list[FolderEntry], writer: DatasetWriter,
                run: LabelRun) -> AutoLabelConfig:
    """``config`` with the folder's measures (`trainer.autolabel.for_folder`), recorded in dataset.json and in
    ``run``."""
    config = for_folder(config, entries)
    if config.folder_cells is not None:
        diameter, factor = config.folder_cells
        writer.extra["folder_cells"] = {  # images: those with cells on the copy the folder's measure rests on
            "diameter_px": diameter, "copy_factor": factor,
            "images": sum(any(measure.factor == factor for measure in entry.copies or ()) for entry in entries)}
    taken = sum(entry.tentative for entry in entries)
    if config.folder_modality is not None and taken:
        writer.extra["folder_modality"] = {"modality": config.folder_modality, "images": taken}
        run.folder_modality = (config.folder_modality, taken)
    return config


def _record_decisions(writer: DatasetWriter, run: LabelRun, per_image: dict, config: AutoLabelConfig) -> None:
    """What the labeller decided, in dataset.json: per image, and the folder's scale (the median estimate where
    it was estimated: training and counting read ``pixel_size_um``)."""
    writer.extra.update(modality=dict(run.modality), polarity=dict(run.polarity), threshold=dict(run.threshold),
                        rejected=dict(run.rejected), autolabel_images=per_image)
    if run.diameters:
        writer.extra["diameter_px"] = {"median": round(run.median_diameter, 1), "min": min(run.diameters),
                                       "max": max(run.diameters)}
    if not config.given_scale and run.median_diameter:
        writer.pixel_size_um = round(config.at_scale(run.median_diameter).pixel_size_um, 4)
        writer.extra["scale"] = "estimated"
    else:
        writer.extra["scale"] = "given" if config.given_scale else "default"


def _config_json(config: AutoLabelConfig) -> dict:
    data = asdict(config)
    del data["folder_cells"], data["folder_modality"]  # measured after this is written: top-level keys of their own
    data.update(morphology=config.use_morphology)
    fixed = config.scaled()
    if fixed is not None:  # with the scale estimated these differ per image
        data.update(block_size=fixed.block, offset=fixed.threshold_offset, min_area_px=fixed.min_area)
    return data
