"""Build visionloop's images with no network: a debootstrap base, a host wheelhouse, ``--network none``.

    python docker/build.py serve --offline       # base from debootstrap, wheels from the host's pip
    python docker/build.py train --offline
    python docker/build.py serve                 # on python:3.11-slim from a registry, wheels from PyPI

Registries cannot always be reached (air-gapped clusters, this project's CI), so ``--offline``
makes every input locally: the base image is a minimal Debian root filesystem made with
``debootstrap`` from the machine's configured mirror and ``docker import``ed once under a local
tag (kept in the daemon, so a rerun skips it); the wheels come from ``pip wheel`` on the host
(its cache makes a rerun fast) and are copied into a temporary build context with the sources.
Standard library only: tests and benches import it by path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = "bookworm"  # Debian 12: python3 is 3.11, the wheels' ABI
BASES = {  # local tag -> Debian packages on top of minbase
    "serve": ("visionloop-base:bookworm", ["python3", "python3-venv", "ca-certificates"]),
    # OpenCV (ultralytics) needs libGL and glib at import
    "train": ("visionloop-base:bookworm-gl", ["python3", "python3-venv", "ca-certificates", "libgl1",
                                              "libglib2.0-0"]),
}
EXTRAS = {"serve": "serve", "train": "train,s3"}
TRIM = ["var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
        "usr/share/locale"]


class BuildError(RuntimeError):
    """A step failed; the message is one line plus the tail of the step's output."""


@dataclass(frozen=True)
class Built:
    tag: str
    base: str
    seconds: float
    size_bytes: int
    base_size_bytes: int

    @property
    def added_bytes(self) -> int:
        return self.size_bytes - self.base_size_bytes


def _run(cmd: list[str], what: str, timeout: float = 3600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def docker(*args: str, what: str = "docker", timeout: float = 3600) -> str:
    # the legacy builder: no buildx needed, and it honours --network none for RUN steps
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    return _run(["docker", *args], what, timeout=timeout, env=env).stdout


def daemon_running() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def image_size(tag: str) -> int:
    return int(json.loads(docker("image", "inspect", tag, what="inspect"))[0]["Size"])


def debian_mirror() -> str:
    """The first Debian archive apt is configured with (deb822 ``URIs:`` or a one-line ``deb``)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list"),
                                                                           *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^\s*(?:URIs:\s*(\S+)|deb\s+(?:\[[^\]]*\]\s+)?(\S+))", text, re.M):
            uri = m.group(1) or m.group(2)
            if "security" not in uri:
                return uri
    return "http://deb.debian.org/debian"


def ensure_base(kind: str = "serve", log=print) -> str:
    """The local base image for ``kind``; built with debootstrap the first time only."""
    tag, packages = BASES[kind]
    if image_exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = debian_mirror()
    log(f"base {tag}: debootstrap {SUITE} from {mirror} with {', '.join(packages)}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vl-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs), mirror],
             "debootstrap", timeout=1800)
        for rel in TRIM:
            for child in (rootfs / rel).glob("*"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            for child in sorted(rootfs.iterdir()):
                tar.add(child, arcname=child.name)
        docker("import", "--change", 'CMD ["python3"]', str(archive), tag, what="docker import")
    log(f"base {tag}: {image_size(tag) / 1e6:.0f} MB in {time.monotonic() - start:.0f} s")
    return tag


def wheelhouse(extras: str, dest: Path, log=print) -> Path:
    """Wheels for ``.[extras]`` (and the build backend) at the versions in constraints.txt."""
    dest.mkdir(parents=True, exist_ok=True)
    log(f"wheelhouse .[{extras}] -> {dest}")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-c",
          str(ROOT / "constraints.txt"), "-w", str(dest), f"{ROOT}[{extras}]", "setuptools>=68", "wheel"],
         "pip wheel", timeout=3600)
    for own in dest.glob("visionloop-*.whl"):  # the image builds the package from its own copy of src/
        own.unlink()
    return dest


def _context(dest: Path, wheels: Path | None) -> Path:
    """Only what the Dockerfiles copy: sources, metadata, Dockerfiles and (hard links to) the wheels."""
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dest / "docker" / "wheelhouse").mkdir(parents=True)
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        shutil.copy2(dockerfile, dest / "docker" / dockerfile.name)
    for whl in (wheels.glob("*.whl") if wheels else []):
        target = dest / "docker" / "wheelhouse" / whl.name
        try:
            os.link(whl, target)
        except OSError:
            shutil.copy2(whl, target)
    return dest


def build(kind: str, tag: str, base: str, wheels: Path | None, build_args: dict[str, str] | None = None,
          network: str = "none", log=print) -> Built:
    """``docker build`` of docker/<kind>.Dockerfile on ``base``; with ``wheels``, no network at all."""
    args = {"BASE": base, "EXTRAS": EXTRAS[kind], **(build_args or {})}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"vl-{kind}-context-") as tmp:
        ctx = _context(Path(tmp), wheels)
        cmd = ["build", "--network", network, "-f", str(ctx / "docker" / f"{kind}.Dockerfile"), "-t", tag]
        for key, value in args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        log(f"docker build {kind} -> {tag} on {base}")
        docker(*cmd, str(ctx), what=f"docker build {kind}")
    seconds = time.monotonic() - start
    built = Built(tag, base, seconds, image_size(tag), image_size(base))
    log(f"{tag}: {built.size_bytes / 1e6:.0f} MB ({built.added_bytes / 1e6:.0f} MB above the base) "
        f"in {seconds:.0f} s")
    return built


def build_offline(kind: str, tag: str, wheel_dir: Path, log=print) -> Built:
    base = ensure_base(kind, log=log)
    return build(kind, tag, base, wheelhouse(EXTRAS[kind], wheel_dir, log=log), log=log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(BASES))
    parser.add_argument("--tag", help="image tag (default visionloop-<kind>:latest)")
    parser.add_argument("--offline", action="store_true", help="debootstrap base + host wheelhouse, --network none")
    parser.add_argument("--wheels", type=Path, default=Path.home() / ".cache" / "visionloop" / "wheelhouse",
                        help="where --offline keeps its wheels")
    parser.add_argument("--torch", choices=["cpu", "cuda"], default="cpu", help="train: the torch build (online)")
    opts = parser.parse_args(argv)
    tag = opts.tag or f"visionloop-{opts.kind}:latest"
    try:
        if opts.offline:
            build_offline(opts.kind, tag, opts.wheels / opts.kind)
        else:
            build(opts.kind, tag, "python:3.11-slim", None, {"TORCH": opts.torch} if opts.kind == "train" else None,
                  network="default")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
