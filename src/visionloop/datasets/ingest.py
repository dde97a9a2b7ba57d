"""The one path every importer takes: source items → checked images in the store → a version.

Importers (``formats/``) only describe what they found as a :class:`SourceDataset` (boxes for
detection; one class name per item for ``task="classify"``); this module
decodes and (optionally) downsizes each image once, checks its labels, stores the bytes by hash
and commits a manifest. Blobs are written before the manifest, so an import that dies half way
leaves only unreferenced blobs, never a visible version. In strict mode every item is checked
before the first byte is written (the checked bytes wait in memory until then). Images are
checked on a few threads and written on others, since decoding and file I/O release the GIL.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ValidationError, VisionloopError
from ..store import Store, open_store, sha256_bytes
from . import images
from .catalog import Catalog, CommitResult, DraftImage, check_same_task
from ..predictions import Task
from .manifest import DatasetManifest, DatasetRef, Preprocessing, SplitPolicy, YoloBox
from .split import Split
from .validate import LabelError, Problem, ProblemKind, RawBox, ValidationReport, normalize_boxes

LabelReader = Callable[[], list[RawBox] | None]  # None: no label file (a background image)
Progress = Callable[[int, int | None], None]


def _no_labels() -> None:
    return None


@dataclass
class SourceItem:
    """One image as an importer found it. Bytes and labels are read lazily: big sets stream."""

    name: str  # path inside the source, names the image in messages and in the manifest
    load: Callable[[], bytes]
    labels: LabelReader = _no_labels  # may raise LabelError
    label_name: str = ""  # names the label file in messages
    split: Split | None = None
    class_name: str | None = None  # classify: the image's one label (checked against the classes)


@dataclass
class SourceDataset:
    classes: list[str]
    items: Iterable[SourceItem]
    description: str  # what was imported, recorded as the manifest's source
    total: int | None = None  # number of items when known (progress bar)
    has_splits: bool = False  # the source declares train/val/test itself
    problems: list[Problem] = field(default_factory=list)  # found while reading the source
    task: Task = "detect"  # classify: every item has a class_name and no boxes


@dataclass
class ImportOptions:
    max_width: int | None = None
    seed: int | None = None  # None: the parent's seed, else 0
    resplit: bool = False  # ignore the source's own splits, use the hash split
    strict: bool = False
    add: bool = False  # new version = latest version + these images


@dataclass
class ImportResult:
    commit: CommitResult
    report: ValidationReport

    @property
    def created(self) -> bool:
        return self.commit.created


@dataclass(frozen=True)
class _Checked:
    prepared: images.PreparedImage
    boxes: list[YoloBox]
    class_id: int | None = None

    def label_key(self) -> tuple:
        """Equal keys = the same labels (an identical duplicate, not a conflict)."""
        boxes = sorted((b.class_id, round(b.cx, 6), round(b.cy, 6), round(b.w, 6), round(b.h, 6)) for b in self.boxes)
        return self.class_id, tuple(boxes)


def _resolve_options(catalog: Catalog, name: str, opts: ImportOptions) -> tuple[int | None, int]:
    """New images of an existing dataset are split with its seed; with ``--add`` they must also be
    prepared like the old ones (one version, one preprocessing)."""
    parent = catalog.latest(name)
    max_width, seed = opts.max_width, opts.seed
    if parent is not None and seed is None:
        seed = parent.split_policy.seed
    if parent is not None and opts.add:
        old = parent.preprocessing.max_width
        if max_width is None:
            max_width = old
        elif max_width != old:
            raise ValidationError(f"{parent.ref} was imported with --max-width {old}; "
                                  f"images added to it must use the same (got {max_width})")
    if max_width is not None and max_width < 1:
        raise ValidationError(f"--max-width must be a positive number of pixels, got {max_width}")
    return max_width, 0 if seed is None else seed


def _class_id(item: SourceItem, classes: list[str]) -> int:
    if item.class_name is None:
        raise LabelError(ProblemKind.UNLABELED, "no class label")
    if item.class_name not in classes:
        raise LabelError(ProblemKind.UNKNOWN_CLASS,
                         f"class {item.class_name!r} is not one of the classes ({', '.join(classes)})")
    return classes.index(item.class_name)


def _check_item(item: SourceItem, classes: list[str], task: Task, max_width: int | None) -> _Checked | Problem:
    """Labels first (cheap), then the image (decoded once), then the boxes against its size."""
    nc = len(classes)
    try:
        raw = item.labels()
        class_id = _class_id(item, classes) if task == "classify" else None
    except LabelError as exc:
        return Problem(exc.kind, item.label_name or item.name, str(exc))
    try:
        prepared = images.prepare(item.load(), max_width)
    except VisionloopError as exc:
        bomb = "decompression bomb" in str(exc)
        return Problem(ProblemKind.DECOMPRESSION_BOMB if bomb else ProblemKind.UNREADABLE_IMAGE, item.name, str(exc))
    except OSError as exc:
        return Problem(ProblemKind.UNREADABLE_IMAGE, item.name, f"cannot read: {exc.strerror or exc}")
    try:
        boxes = normalize_boxes(raw or [], nc, prepared.source_width, prepared.source_height)
    except LabelError as exc:
        return Problem(exc.kind, item.label_name or item.name, str(exc))
    return _Checked(prepared, boxes, class_id)


def _checked_in_order(items: Iterable[SourceItem], classes: list[str], task: Task, max_width: int | None,
                      workers: int) -> Iterator[tuple[SourceItem, _Checked | Problem]]:
    """Check items on ``workers`` threads (Pillow decodes without the GIL) a few items ahead,
    yielding results in source order so messages and duplicate handling stay deterministic."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-check")
    window: deque[tuple[SourceItem, Future]] = deque()
    try:
        for item in items:
            window.append((item, pool.submit(_check_item, item, classes, task, max_width)))
            if len(window) > 2 * workers:
                head, fut = window.popleft()
                yield head, fut.result()
        while window:
            head, fut = window.popleft()
            yield head, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _BlobWriter:
    """Writes blobs on a few threads while the caller decodes the next image.

    File and network I/O release the GIL, so overlapping it with decoding keeps the import
    close to decode speed. Local blobs skip the per-file fsync; :meth:`flush` makes them all
    durable with one filesystem sync before the manifest may name them. The queue is bounded so
    a large import never holds more than a few images in memory.
    """

    def __init__(self, store: Store, workers: int = 4, max_pending: int = 32):
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blob-writer")
        self.pending: deque[Future] = deque()
        self.max_pending = max_pending

    def put(self, data: bytes, sha: str) -> None:
        self.pending.append(self.pool.submit(self.store.put_blob, data, sha, durable=False))
        while len(self.pending) > self.max_pending:
            self.pending.popleft().result()

    def flush(self) -> None:
        """Every blob is written and durable when this returns; errors surface here."""
        while self.pending:
            self.pending.popleft().result()
        self.store.sync()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def ingest(store: Store, source: SourceDataset, name: str, opts: ImportOptions | None = None,
           progress: Progress | None = None) -> ImportResult:
    """Check, store and commit ``source`` as a new version of ``name``.

    Default: bad items are dropped and listed in the report. Strict: any problem raises
    :class:`ValidationError` and nothing is written.
    """
    opts = opts or ImportOptions()
    catalog = Catalog(store)
    DatasetRef.parse(name)  # a bad name fails before any work
    max_width, seed = _resolve_options(catalog, name, opts)
    check_same_task(catalog.latest(name), source.task)  # before any blob is written
    if not source.classes:
        raise ValidationError(f"{source.description}: no class names found")
    report = ValidationReport(problems=list(source.problems), task=source.task)
    drafts: dict[str, DraftImage] = {}
    first_seen: dict[str, str] = {}
    conflicts: set[str] = set()
    pending: list[tuple[str, bytes]] = []  # strict: written only once everything passed

    writer = _BlobWriter(store)
    checks = _checked_in_order(source.items, source.classes, source.task, max_width,
                               workers=min(8, 2 * (os.cpu_count() or 1)))
    keys: dict[str, tuple] = {}
    try:
        for done, (item, checked) in enumerate(checks, start=1):
            if progress:
                progress(done, source.total)
            if isinstance(checked, Problem):
                report.problems.append(checked)
                continue
            prepared = checked.prepared
            sha = sha256_bytes(prepared.data)
            if sha in drafts or sha in conflicts:
                if sha not in conflicts and keys[sha] == checked.label_key():
                    report.duplicates += 1
                    continue
                conflicts.add(sha)
                report.add(ProblemKind.CONFLICTING_DUPLICATE, item.name,
                           f"same image as {first_seen[sha]} but {_differs(source, drafts.get(sha), checked)} "
                           f"(both dropped)")
                continue
            first_seen[sha] = item.name
            keys[sha] = checked.label_key()
            if opts.strict:
                pending.append((sha, prepared.data))
            else:
                writer.put(prepared.data, sha)
            drafts[sha] = DraftImage(sha, prepared.ext, prepared.width, prepared.height, checked.boxes,
                                     class_id=checked.class_id, source=item.name, split=item.split)

        for sha in conflicts:
            drafts.pop(sha, None)
        if opts.strict:
            report.raise_if_problems()
            for sha, data in pending:
                writer.put(data, sha)
        writer.flush()  # all blobs are in place before the manifest names them
    finally:
        checks.close()
        writer.close()
    kept = list(drafts.values())
    report.images = len(kept)
    report.background = sum(1 for d in kept if not d.boxes)
    report.boxes = sum(len(d.boxes) for d in kept)
    if source.task == "classify":
        ids = [d.class_id for d in kept]
        report.per_class = {c: ids.count(i) for i, c in sorted(enumerate(source.classes), key=lambda p: p[1])}
    if not kept:
        detail = f": {report.problems[0]}" if report.problems else ""
        raise ValidationError(f"no valid images in {source.description}{detail}")
    mode = "source" if source.has_splits and not opts.resplit else "hash"
    result = catalog.commit(
        name, source.classes, kept,
        task=source.task,
        preprocessing=Preprocessing(max_width=max_width),
        split_policy=SplitPolicy(mode=mode, seed=seed),
        source=source.description,
        add_to_parent=opts.add,
    )
    return ImportResult(result, report)


def _differs(source: SourceDataset, first: DraftImage | None, again: _Checked) -> str:
    """How a conflicting duplicate differs, for its message."""
    if source.task != "classify" or first is None or first.class_id is None or again.class_id is None:
        return "different labels"
    return f"a different class ({source.classes[again.class_id]} vs {source.classes[first.class_id]})"


# -- `train --data PATH`: a dataset version, or a source imported on the fly ---------------------
def is_import_source(spec: str) -> bool:
    """Only an explicit source is imported: a URL, a zip, a path with a separator (``./x``,
    ``/x``, ``a/b``, ``~/x``) or a data.yaml. A bare ``NAME`` or ``N@V`` always names a
    version, even when a folder of that name happens to exist in the current directory."""
    if "://" in spec or spec.endswith((".zip", ".yaml", ".yml")):
        return True
    return "/" in spec or os.sep in spec or spec.startswith(("~", "."))


def name_from_source(spec: str) -> str:
    """``exports/hand signs.zip`` → ``hand-signs``: a valid dataset name from the file name."""
    stem = Path(spec.rstrip("/").split("?")[0]).name.removesuffix(".zip")
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", stem).strip("-.") or "dataset"


def resolve_or_import(spec: str, max_width: int | None = None, name: str = "",
                      store: Store | None = None) -> DatasetManifest:
    """``N@V`` → its manifest; a zip/folder/URL is imported first under ``name`` (default: from
    its file name). Unchanged content gives the same version again, not a new one."""
    from .formats import open_source  # formats import this module

    store = store or open_store()
    if not is_import_source(spec):
        return Catalog(store).load(DatasetRef.parse(spec))
    result = ingest(store, open_source(spec), name or name_from_source(spec), ImportOptions(max_width=max_width))
    return result.commit.manifest
