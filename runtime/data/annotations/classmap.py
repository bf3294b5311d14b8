"""From the class names a labelling tool uses to the dataset's classes (`--classes RBC=rbc,WBC=wbc`)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.classes import CLASS_NAMES
from runtime.errors import CscError

WILDCARD = "*"
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class ResolvedClasses:
    """The dataset's classes (background first) and, per source name, its class id or None (dropped)."""

    classes: tuple[str, ...]
    ids: dict[str, int | None]
    fallback: int | None = None  # the class of names first met while writing (`*=NAME`), else dropped

    def class_id(self, source_name: str) -> int | None:
        return self.ids.get(source_name, self.fallback)


@dataclass(frozen=True)
class ClassMap:
    """``SOURCE=target`` pairs; ``*=target`` takes every name not listed (and cells without a name); a bare
    ``NAME`` keeps that name. With a map, names it does not mention are dropped (and counted in the summary)."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str | None) -> ClassMap:
        if not spec:
            return cls()
        pairs = []
        for item in spec.split(","):
            source, _, target = item.partition("=")
            source, target = source.strip(), (target or source).strip()
            if not source or not target:
                raise CscError(f"--classes item {item!r} is not SOURCE=target", fix="e.g. --classes RBC=rbc,WBC=wbc")
            _check_target(target)
            pairs.append((source, target))
        sources = [s for s, _ in pairs]
        if len(set(sources)) != len(sources):
            raise CscError(f"--classes maps {sorted({s for s in sources if sources.count(s) > 1})[0]!r} twice",
                           fix="give each source name once")
        return cls(tuple(pairs))

    def resolve(self, names: list[str]) -> ResolvedClasses:
        """Classes for the names a source uses (``""`` for cells without a name). Project names (rbc, macrophage)
        keep their ids 1 and 2 when present, so imported sets combine with simulated and auto-labelled ones. A
        source that names no class at all (LabelMe files, which list no classes, of images without a cell) takes
        the project's classes: there is nothing to map, and its images are still labels (of no cell)."""
        if not self.pairs:
            if not names:
                return ResolvedClasses(CLASS_NAMES, {})
            if "" in names:
                raise CscError("the annotations give cells without a class name",
                               fix="name their class with --classes '*=rbc' (or a class table for masks)")
            targets = {n: _project_name(n) for n in names}
            for source, target in targets.items():
                # The advice keeps the other classes: a name --classes leaves out is dropped.
                _check_target(target, keep=[s if s == t else f"{s}={t}" for s, t in targets.items() if s != source])
            return _resolved(targets)
        known = [n for n in names if n]
        for source, _ in self.pairs:
            if source != WILDCARD and source not in names:
                raise CscError(f"--classes names {source!r}, which the annotations do not use",
                               fix="the annotations name: " + (", ".join(repr(n) for n in known) or "no classes"))
        explicit = dict(self.pairs)
        fallback = explicit.pop(WILDCARD, None)
        targets = {n: explicit.get(n, fallback) for n in names}
        resolved = _resolved(targets, [t for _, t in self.pairs])
        if fallback is None:
            return resolved
        return ResolvedClasses(resolved.classes, resolved.ids, resolved.classes.index(fallback))


def _project_name(name: str) -> str:
    lower = name.lower()
    return lower if lower in CLASS_NAMES[1:] else name


def usable_name(name: str) -> bool:
    """Whether ``name`` can be a dataset's class (it names files' columns and a model's outputs)."""
    return name != CLASS_NAMES[0] and bool(_VALID.match(name))


def _check_target(name: str, keep: list[str] | None = None) -> None:
    """A CscError for an unusable class name; ``keep`` (the source's other names) makes the advice a map."""
    if not usable_name(name):
        why = "is reserved for class 0" if name == CLASS_NAMES[0] else "is not a usable class name"
        fix = ("use letters, digits, _ . + - (e.g. rbc, wbc)" if keep is None else
               f"map it with --classes '{','.join([f'{name}=NAME', *keep])}'")
        raise CscError(f"class name {name!r} {why}", fix=fix)


def _resolved(targets: dict[str, str | None], order: list[str] | None = None) -> ResolvedClasses:
    wanted = list(dict.fromkeys(t for t in (order or targets.values()) if t is not None))
    if not wanted:
        raise CscError("no annotated class is kept", fix="map at least one class with --classes SOURCE=target")
    project = [n for n in CLASS_NAMES[1:] if n in wanted]
    classes = (CLASS_NAMES[0], *project, *(n for n in wanted if n not in project))
    if set(wanted) <= set(CLASS_NAMES[1:]):
        classes = CLASS_NAMES  # only project names: the project's class table, so datasets combine
    return ResolvedClasses(classes, {s: (None if t is None else classes.index(t)) for s, t in targets.items()})
