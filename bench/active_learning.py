"""Does picking images by a selection strategy beat random picks? A pool-based active-learning run.

Protocol (issue 16, item 4):

- Data: any YOLO detect ``data.yaml`` (read in place: every subset is a temp folder of symlinks to
  its images and label files) or ``--data synthetic`` (generated shapes, which a from-scratch
  yolo11n learns in a few CPU epochs: the run with signal). Its ``train`` split is the pool, its
  ``val`` split is what ultralytics validates on at the end of a training, its ``test`` split is
  frozen and scores every round (mAP50-95 by the served path, ``training.evaluate.run_evaluation``).
- Per seed: ``--seed-size`` images drawn at random (seeded) are labeled; a model trained on them
  from scratch is round 0, shared by every strategy. Then ``--rounds`` rounds, each: the round's
  model is exported to ONNX and predicts every unlabeled pool image (``OnnxModel.predict`` at
  conf ``--conf``, then ``serving.pipeline.image_scores``), candidates get the thumbnail embedding
  and difference hash of ``feedback.scoring`` and, for ``disagreement``, the ``disagreement()``
  of the round's model and the one before it (round 1: a model trained from scratch on half the
  seed set, same recipe); ``selection.select(..., control_fraction=0)`` picks ``--budget`` images
  (the control slice measures a strategy in production; here every strategy has its own random
  arm); their labels are revealed (the images join the train set with their label files); the
  model is retrained and evaluated.
- Low conf: at the served 0.25 an undertrained model answers nothing, every image scores "no
  detection" and ranking is a tie. At ``--conf`` (0.01) the weak boxes are seen; the scores are
  still measured against the served threshold (0.25), as a capture would be. ``--aggregate mean``
  (the server's default too, feedback.scoring.DEFAULT_AGGREGATE): at a 0.01 floor the least
  confident box of every image is a
  background box at ~0.01, so ``max`` ranks noise. Measured on RPS with a model trained 30 epochs on
  100 images, as the AUC of the score for "the model misses this image's hands at 0.25" over 194
  pool images: least_confidence ``max`` 0.52, ``mean`` 0.83 (1 - top box confidence: 0.81).
  Ties (and candidate order) are shuffled with the seed, so a tie is broken at random, never by
  file name.
  Disagreement compares the two models' boxes at ``--disagree-conf``: at 0.01 both lists hold
  hundreds of background boxes and would disagree everywhere.
- Fixed recipe for every training: yolo11n, ``--epochs``, ``--imgsz``, batch 16 with ``nbs=16``
  (an optimizer step per batch: ultralytics' default accumulates to 64 images, which leaves a
  40-image set 12 steps in 20 epochs; measured on RPS, 100 images x 20 epochs from scratch: test
  mAP50-95 0.056 with nbs 64, 0.213 with nbs 16), AdamW via ``optimizer="auto"``, ``val=False``
  (validated once, at the end), the AL seed as the training seed, ``last.pt`` (no best-epoch pick).
- Warm start: each round fine-tunes the previous round's ``last.pt`` (round 0 and the half-seed
  model start from ``yolo11n.yaml``). Why not from scratch: on a CPU budget a from-scratch yolo11n
  gets a few epochs per round, which leaves it at mAP ~0 on real data, so every strategy would be
  ranking noise and every curve would be flat; warm-starting keeps the per-round cost and lets the
  model improve round by round (measured on RPS: 40 images x 20 epochs from scratch, mAP50-95 0;
  warm-started on 60 images for 20 more, 0.13). The cost: a round's model mixes more data with
  more total epochs, so the curve is not what a from-scratch retrain would reach at that count.
  It is the same for every strategy: at a given round every arm has had the same epochs from the
  same round-0 model, so the difference between arms at equal labeled counts is the images picked.

Run: ``.venv/bin/python bench/active_learning.py`` (defaults: RPS, sized for <= 45 min on 2 cores);
``--data synthetic`` for the generated shapes.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from visionloop.feedback.scoring import ImageScores
    from visionloop.feedback.selection import Candidate
    from visionloop.predictions import Detections

ROOT = Path(__file__).resolve().parents[1]
RPS_YAML = ROOT.parent / "shared" / "datasets" / "rock-paper-scissors" / "data.yaml"
MODEL = "yolo11n.yaml"
BATCH = 16
SYNTH_SEED = 0  # the generated data set is fixed; --seeds vary the seed set and the training


@dataclass(frozen=True)
class Splits:
    """The images of a detect data set (absolute paths, sorted) and its class names."""

    names: list[str]
    pool: list[Path]
    val: list[Path]
    test: list[Path]


@dataclass(frozen=True)
class Recipe:
    epochs: int
    imgsz: int
    threads: int  # 0: visionloop's auto_threads() at each training (idle cores from the load average)

    def threads_now(self) -> int:
        """Measured here: 2 torch threads on 2 cores with one core busy elsewhere trained 10x slower
        than 1 thread (56 s vs 5.5 s for one small training), so the pick follows the load."""
        from visionloop.training.config import auto_threads

        return self.threads or auto_threads()


@dataclass(frozen=True)
class Model:
    pt: Path
    onnx: Path


@dataclass(frozen=True)
class PoolPrediction:
    """What a round keeps of one pool image's prediction: its scores and its boxes."""

    scores: ImageScores
    detections: Detections


@dataclass(frozen=True)
class RoundResult:
    strategy: str
    seed: int
    round: int
    labeled: int
    map50_95: float
    seconds: float
    merged: int = 0  # candidates merged into a near-duplicate before picking


# -- data -----------------------------------------------------------------------------------------
def synthetic_yaml(workdir: Path, n: int, size: int) -> Path:
    """``n`` generated shape images, hash-split and materialized under ``workdir`` (as the tests do)."""
    from visionloop.datasets import synthetic
    from visionloop.datasets.materialize import materialize
    from visionloop.store import Store

    store = Store(str(workdir / "synthetic-store"))
    manifest = synthetic.commit_generated(store, "al-shapes", n, seed=SYNTH_SEED, size=size)
    return materialize(store, manifest, workdir / "synthetic-cache")


def _images(entry: str | list) -> list[Path]:
    """Image files of one resolved ``data.yaml`` split entry: folder(s) or a text file listing them."""
    from ultralytics.data.utils import IMG_FORMATS

    out: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        p = Path(item)
        if p.is_dir():
            out += [f for f in p.rglob("*") if f.is_file() and f.suffix[1:].lower() in IMG_FORMATS]
        elif p.is_file() and p.suffix[1:].lower() in IMG_FORMATS:
            out.append(p)
        elif p.is_file():
            lines = [s.strip() for s in p.read_text(encoding="utf-8-sig").splitlines() if s.strip()]
            out += [(p.parent / s[2:]) if s.startswith("./") else Path(s) for s in lines]
    return sorted(f.absolute() for f in out)


def read_splits(data_yaml: Path) -> Splits:
    """train (the pool), val and test of a detect data.yaml, resolved the way ultralytics does."""
    from ultralytics.data.utils import check_det_dataset

    cfg = check_det_dataset(str(data_yaml), autodownload=False)
    if cfg.get("task", "detect") != "detect":
        sys.exit(f"{data_yaml}: only detect data sets (this is {cfg['task']})")
    names = cfg["names"]
    splits = {k: _images(cfg[k]) if cfg.get(k) else [] for k in ("train", "val", "test")}
    for k, files in splits.items():
        if not files:
            sys.exit(f"{data_yaml}: no {k} images (the bench needs train = pool, val, and a frozen test split)")
    return Splits([names[i] for i in sorted(names)], splits["train"], splits["val"], splits["test"])


def link_split(files: Sequence[Path], root: Path, split: str) -> Path:
    """``root/images/<split>/`` and ``root/labels/<split>/``: symlinks to the images and their label
    files (ultralytics finds a label by path, and writes its label cache next to ours, not the source's)."""
    from ultralytics.data.utils import img2label_paths

    img_dir, lbl_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        name = f"{i:05d}_{f.name}"  # unique even if two source folders share a file name
        (img_dir / name).symlink_to(f)
        label = Path(img2label_paths([str(f)])[0])
        if label.is_file():  # no label file: a background image, as in ultralytics
            (lbl_dir / f"{Path(name).stem}.txt").symlink_to(label)
    return img_dir


def write_yaml(path: Path, root: Path, train: str, val: str, test: str, names: list[str]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"path": str(root), "train": train, "val": val, "test": test,
                                    "names": dict(enumerate(names))}, sort_keys=False))
    return path


# -- one training ---------------------------------------------------------------------------------
def train(recipe: Recipe, splits: Splits, frozen: Path, labeled: Sequence[Path], init: str, out: Path,
          seed: int) -> Model:
    """The fixed recipe on ``labeled`` from ``init`` (a .yaml: from scratch; a .pt: warm start),
    exported to ONNX the way ``visionloop train`` exports (dynamic, simplified, with metadata)."""
    from ultralytics import YOLO

    from visionloop.training.export import export_onnx
    from visionloop.training.trainer import torch_threads, ultralytics_output

    link_split(labeled, out, "train")
    data = write_yaml(out / "data.yaml", out, "images/train", str(frozen / "images" / "val"),
                      str(frozen / "images" / "test"), splits.names)
    with ultralytics_output(out / "ultralytics.log"), torch_threads(recipe.threads_now()):
        YOLO(init).train(data=str(data), epochs=recipe.epochs, imgsz=recipe.imgsz, batch=BATCH, device="cpu",
                         nbs=BATCH, workers=0, plots=False, val=False, seed=seed, deterministic=True, project=str(out),
                         name="train", exist_ok=True, verbose=False)
        pt = out / "train" / "weights" / "last.pt"
        onnx = export_onnx(pt, recipe.imgsz, out / "model.onnx").onnx_path
    (out / "train" / "weights" / "best.pt").unlink(missing_ok=True)  # never used: 5 MB a training
    return Model(pt, onnx)


def evaluate(model: Model, frozen_yaml: Path) -> float:
    from visionloop.training.evaluate import run_evaluation

    return float(run_evaluation(model.onnx, frozen_yaml, "test").result.map50_95)


# -- candidates -----------------------------------------------------------------------------------
def predict_pool(model: Model, files: Sequence[Path], conf: float, threads: int,
                 aggregate: str) -> dict[Path, PoolPrediction]:
    """Every file through the served runtime at ``conf``, scored as a capture (against the served
    threshold, not ``conf``)."""
    from visionloop.feedback.scoring import DEFAULT_THRESHOLD
    from visionloop.serving.pipeline import image_scores
    from visionloop.serving.preprocess import decode_image
    from visionloop.serving.runtime import OnnxModel, PredictParams

    runtime = OnnxModel(model.onnx, intra_threads=threads)
    params = PredictParams(conf=conf)
    out = {}
    for f in files:
        raw = runtime.predict(decode_image(f.read_bytes()), params)
        raw.threshold = DEFAULT_THRESHOLD
        out[f] = PoolPrediction(image_scores(raw, aggregate), raw.detections)
    return out


def above(dets: Detections, conf: float) -> Detections:
    from visionloop.predictions import Detections

    keep = dets.conf >= conf
    return Detections(dets.xyxy[keep], dets.conf[keep], dets.cls[keep])


@dataclass(frozen=True)
class ImageSignals:
    embedding: np.ndarray
    phash: int


def image_signals(files: Sequence[Path]) -> dict[Path, ImageSignals]:
    """The model-free signals, once per pool image."""
    from PIL import Image

    from visionloop.feedback.scoring import dhash, thumbnail_embedding

    out = {}
    for f in files:
        with Image.open(f) as im:
            out[f] = ImageSignals(thumbnail_embedding(im), dhash(im))
    return out


def candidates(unlabeled: Sequence[Path], current: dict[Path, PoolPrediction],
               previous: dict[Path, PoolPrediction] | None, signals: dict[Path, ImageSignals],
               disagree_conf: float, rng: np.random.Generator) -> list[Candidate]:
    """One Candidate per unlabeled image, in a seeded random order (ties are broken at random)."""
    from visionloop.feedback.scoring import disagreement
    from visionloop.feedback.selection import Candidate

    out = []
    for i in rng.permutation(len(unlabeled)).tolist():
        f = unlabeled[i]
        cur = current[f]
        dis = None
        if previous is not None:
            dis = disagreement(above(cur.detections, disagree_conf), above(previous[f].detections, disagree_conf))
        out.append(Candidate(id=str(f), scores=cur.scores, embedding=signals[f].embedding, phash=signals[f].phash,
                             disagreement=dis))
    return out


# -- the experiment -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    recipe: Recipe
    splits: Splits
    frozen: Path
    frozen_yaml: Path
    signals: dict[Path, ImageSignals]
    strategies: list[str]
    rounds: int
    budget: int
    seed_size: int
    conf: float
    disagree_conf: float
    by: str
    aggregate: str
    workdir: Path

    def predict(self, model: Model, files: Sequence[Path]) -> dict[Path, PoolPrediction]:
        return predict_pool(model, files, self.conf, self.recipe.threads_now(), self.aggregate)


def log(msg: str) -> None:
    print(msg, flush=True)


def report_round(r: RoundResult) -> None:
    merged = f"  ({r.merged} near-duplicates merged)" if r.merged else ""
    log(f"  {r.strategy:<22} seed {r.seed}  round {r.round}  labeled {r.labeled:>4}  "
        f"mAP50-95 {r.map50_95:.4f}  {r.seconds:6.1f} s{merged}")


def run_seed(s: Setup, seed: int) -> list[RoundResult]:
    from visionloop.feedback.selection import select

    rng = np.random.default_rng(seed)
    pool = s.splits.pool
    seed_set = [pool[i] for i in rng.choice(len(pool), s.seed_size, replace=False).tolist()]  # in draw order
    base = s.workdir / f"seed{seed}"
    t0 = time.perf_counter()
    m0 = train(s.recipe, s.splits, s.frozen, seed_set, MODEL, base / "round0", seed)
    map0 = evaluate(m0, s.frozen_yaml)
    in_seed = set(seed_set)
    unlabeled0 = [f for f in pool if f not in in_seed]
    preds0 = s.predict(m0, unlabeled0) if s.rounds else {}
    seed_seconds = time.perf_counter() - t0
    prev0 = None
    if "disagreement" in s.strategies and s.rounds:
        t1 = time.perf_counter()
        half_set = seed_set[: max(1, len(seed_set) // 2)]  # a random half: the draw order is random
        half = train(s.recipe, s.splits, s.frozen, half_set, MODEL, base / "half", seed)
        prev0 = s.predict(half, unlabeled0)
        log(f"  (seed {seed}: the half-seed model for round 1's disagreement took {time.perf_counter() - t1:.1f} s)")
    results = []
    for strategy in s.strategies:
        first = RoundResult(strategy, seed, 0, len(seed_set), map0, seed_seconds)
        report_round(first)
        results.append(first)
        labeled, model = list(seed_set), m0
        current, previous = preds0, prev0 if strategy == "disagreement" else None
        for rnd in range(1, s.rounds + 1):
            t1 = time.perf_counter()
            taken = set(labeled)
            unlabeled = [f for f in pool if f not in taken]
            if not unlabeled:
                log(f"  {strategy}: the pool is empty after round {rnd - 1}")
                break
            pick_rng = np.random.default_rng([seed, rnd])
            cands = candidates(unlabeled, current, previous, s.signals, s.disagree_conf, pick_rng)
            sel = select(cands, strategy, s.budget, by=s.by, control_fraction=0.0, seed=seed * 1000 + rnd,
                         labeled_embeddings=np.stack([s.signals[f].embedding for f in labeled]))
            labeled += [Path(i) for i in sel.picked]
            model = train(s.recipe, s.splits, s.frozen, labeled, str(model.pt),
                          base / strategy.replace("+", "_") / f"round{rnd}", seed)
            score = evaluate(model, s.frozen_yaml)
            if rnd < s.rounds:  # the next round's candidates: this model, and the one before it
                taken = set(labeled)
                rest = [f for f in unlabeled if f not in taken]
                nxt = s.predict(model, rest)
                previous = {f: current[f] for f in rest} if strategy == "disagreement" else None
                current = nxt
            res = RoundResult(strategy, seed, rnd, len(labeled), score, time.perf_counter() - t1, len(sel.merged))
            report_round(res)
            results.append(res)
    return results


# -- the report -----------------------------------------------------------------------------------
def summarize(results: Sequence[RoundResult]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per strategy, per round: (mean labeled, mean, min, max) of mAP50-95 over seeds."""
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for strategy in dict.fromkeys(r.strategy for r in results):
        rows = []
        for rnd in sorted({r.round for r in results if r.strategy == strategy}):
            got = [r for r in results if r.strategy == strategy and r.round == rnd]
            maps = [r.map50_95 for r in got]
            rows.append((statistics.mean(r.labeled for r in got), statistics.mean(maps), min(maps), max(maps)))
        out[strategy] = rows
    return out


def table(summary: dict[str, list[tuple[float, float, float, float]]], seeds: int) -> str:
    rounds = max(len(v) for v in summary.values())
    counts = next(v for v in summary.values() if len(v) == rounds)
    head = "| strategy | " + " | ".join(f"{c[0]:.0f} labeled" for c in counts) + " |"
    lines = [f"mAP50-95 on the test split: mean [min–max] over {seeds} seed(s), by labeled images", head,
             "|---|" + "---:|" * rounds]
    for strategy, rows in summary.items():
        cells = [f"{m:.4f} [{lo:.4f}–{hi:.4f}]" for _, m, lo, hi in rows] + [""] * (rounds - len(rows))
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict[str, list[tuple[float, float, float, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy, rows in summary.items():
        x, m, lo, hi = (np.array(v) for v in zip(*rows))
        (line,) = ax.plot(x, m, marker="o", label=strategy)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xticks(sorted({r[0] for rows in summary.values() for r in rows}))
    ax.set_xlabel("labeled images")
    ax.set_ylabel("mAP50-95 (test split)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(results: Sequence[RoundResult], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["strategy", "seed", "round", "labeled", "map50_95", "seconds"])
        for r in results:
            w.writerow([r.strategy, r.seed, r.round, r.labeled, f"{r.map50_95:.5f}", f"{r.seconds:.1f}"])


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from visionloop.feedback.scoring import AGGREGATES, SCORES
    from visionloop.feedback.selection import STRATEGIES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(RPS_YAML), help="A detect data.yaml, or 'synthetic' (generated shapes).")
    ap.add_argument("--seeds", type=int, default=2, help="Seeds 0..N-1 (seed set, tie-breaks, training seed).")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--budget", type=int, default=20, help="Images labeled per round.")
    ap.add_argument("--seed-size", type=int, default=40, help="Images labeled before round 1.")
    ap.add_argument("--epochs", type=int, default=20, help="Per training (every round, warm-started).")
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help=f"Comma-separated, of {', '.join(STRATEGIES)}.")
    ap.add_argument("--by", default="least_confidence", choices=SCORES, help="The score uncertainty ranks by.")
    ap.add_argument("--aggregate", default="mean", choices=AGGREGATES, help="How box scores make an image's.")
    ap.add_argument("--conf", type=float, default=0.01, help="Confidence floor of the pool predictions.")
    ap.add_argument("--disagree-conf", type=float, default=0.1, help="Boxes compared by disagreement.")
    ap.add_argument("--plot", type=Path, default=ROOT / "bench" / "active_learning.png")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="Keep subsets, weights, logs and results.csv here (default: a temp dir, removed).")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch and onnxruntime threads (0: the idle cores, picked again at each training).")
    ap.add_argument("--synthetic-images", type=int, default=300, help="--data synthetic: images generated.")
    ap.add_argument("--synthetic-size", type=int, default=160, help="--data synthetic: their side in pixels.")
    args = ap.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in args.strategies if s not in STRATEGIES]
    if bad or not args.strategies:
        ap.error(f"unknown strategies {bad} (of {', '.join(STRATEGIES)})")
    if min(args.seeds, args.seed_size, args.budget, args.epochs, args.imgsz) < 1 or args.rounds < 0:
        ap.error("--seeds, --seed-size, --budget, --epochs and --imgsz must be at least 1, --rounds at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    keep = args.workdir is not None
    if keep and args.workdir.exists() and any(args.workdir.iterdir()):
        sys.exit(f"--workdir {args.workdir} is not empty (each run writes its subsets and models afresh)")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="vl-al-"))).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update({"YOLO_CONFIG_DIR": str(workdir / "yolo-config"), "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg"})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    t_start = time.perf_counter()
    try:
        from visionloop.training.trainer import ultralytics_output

        with ultralytics_output(workdir / "ultralytics.log"):  # its first import prints a settings banner
            from ultralytics import settings

            settings.update({"mlflow": False})  # no tracking runs for the bench's dozens of trainings
        data_yaml = synthetic_yaml(workdir, args.synthetic_images, args.synthetic_size) \
            if args.data == "synthetic" else Path(args.data)
        splits = read_splits(data_yaml)
        if args.seed_size + args.rounds * args.budget > len(splits.pool):
            sys.exit(f"seed {args.seed_size} + {args.rounds} x {args.budget} images > the pool's {len(splits.pool)}")
        frozen = workdir / "frozen"
        link_split(splits.val, frozen, "val")
        link_split(splits.test, frozen, "test")
        frozen_yaml = write_yaml(frozen / "data.yaml", frozen, "images/val", "images/val", "images/test", splits.names)
        t0 = time.perf_counter()
        signals = image_signals(splits.pool)
        setup = Setup(Recipe(args.epochs, args.imgsz, args.threads), splits, frozen, frozen_yaml, signals,
                      args.strategies, args.rounds, args.budget, args.seed_size, args.conf, args.disagree_conf,
                      args.by, args.aggregate, workdir)
        half = "disagreement" in args.strategies and args.rounds > 0  # the half-seed model
        per_seed = 1 + len(args.strategies) * args.rounds + int(half)
        log(f"data {args.data}: pool {len(splits.pool)}, val {len(splits.val)}, test {len(splits.test)} images, "
            f"classes {splits.names}; embeddings + hashes of the pool in {time.perf_counter() - t0:.1f} s")
        log(f"recipe: {MODEL}, {args.epochs} epochs, imgsz {args.imgsz}, batch {BATCH}, "
            f"{args.threads or 'auto'} threads, warm start each round; seed set {args.seed_size}, {args.rounds} rounds "
            f"x {args.budget}; pool conf {args.conf}, rank by {args.by} ({args.aggregate} over boxes); "
            f"{per_seed * args.seeds} trainings")
        results: list[RoundResult] = []
        for seed in range(args.seeds):
            results += run_seed(setup, seed)
        summary = summarize(results)
        total = time.perf_counter() - t_start
        log("")
        log(table(summary, args.seeds))
        if max(r.map50_95 for r in results) < 0.01:
            log("note: every mAP50-95 is below 0.01: at this recipe the model has not learned the data yet, "
                "so this run cannot tell the strategies apart (more --epochs, --seed-size or --rounds)")
        title = (f"{Path(args.data).parent.name if args.data != 'synthetic' else 'synthetic shapes'}: "
                 f"{args.seeds} seed(s), {args.epochs} epochs/round, imgsz {args.imgsz}, warm start")
        plot(summary, args.plot, title)
        log(f"plot: {args.plot}")
        if keep:
            write_csv(results, workdir / "results.csv")
            log(f"per-round rows: {workdir / 'results.csv'}")
        log(f"total {total:.0f} s ({total / 60:.1f} min), {os.cpu_count()} cores, "
            f"1-min load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
