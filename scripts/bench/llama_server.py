"""Build llama.cpp's ``llama-server`` from the sources in the installed llama-cpp-python's sdist.

The concurrency benchmark compares our node with llama.cpp's own server (path d). To
compare like with like, the server must be the same llama.cpp our wheel was built from,
so this fetches the sdist of the *installed* llama-cpp-python version from PyPI at run
time (``pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==<ver>``), unpacks it
into a temp dir, and builds only the ``llama-server`` target, CPU only, statically linked,
into a cache dir outside the repo (``~/.cache/peerllm/bench/llama-server-<ver>/``).
Nothing of llama.cpp goes into git; the temp dir is removed after the build.

    python scripts/bench/llama_server.py            # build once (minutes on 2 cores)
    python scripts/bench/llama_server.py --print    # the binary's path, or exit 1

The build runs under ``nice -n 10`` (the machine is shared) with ``--jobs`` (default 2).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "peerllm" / "bench"
BINARY_NAME = "llama-server"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_CURL=OFF",  # the bench passes a local model file; no downloads
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary in the cache dir
    "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF",  # CPU only, like our wheel here
)


class BuildError(RuntimeError):
    """The llama-server build failed (our environment: pip, cmake or the compiler)."""


def installed_version() -> str:
    """The llama-cpp-python version in this environment (the sources must match it)."""
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError as exc:
        raise BuildError("llama-cpp-python is not installed in this environment, so there "
                         "is no version to build llama-server from") from exc


def cache_dir(version: str) -> Path:
    return CACHE_ROOT / f"llama-server-{version}"


def binary_path(version: str | None = None) -> Path:
    """Where the built binary lives (it may not exist yet)."""
    return cache_dir(version or installed_version()) / BINARY_NAME


def built_binary() -> Path | None:
    """The built llama-server for the installed version, or None if it was never built."""
    path = binary_path()
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _run(argv: list[str], log: Path, cwd: Path | None = None) -> None:
    print("+", " ".join(argv), flush=True)
    with open(log, "ab") as out:
        rc = subprocess.run(["nice", "-n", "10", *argv], cwd=cwd, stdout=out,
                            stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"{argv[0]} exited with {rc} (full log: {log}):\n{tail}")


def _unpack_sdist(download_dir: Path, into: Path) -> Path:
    archives = sorted(download_dir.glob("llama_cpp_python-*.tar.gz")) + sorted(
        download_dir.glob("llama-cpp-python-*.tar.gz"))
    if not archives:
        raise BuildError(f"pip download left no llama-cpp-python sdist in {download_dir}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(into, filter="data")
    roots = [p for p in into.iterdir() if p.is_dir()]
    source = roots[0] / "vendor" / "llama.cpp" if roots else into
    if not (source / "CMakeLists.txt").is_file():
        raise BuildError(f"the sdist has no vendor/llama.cpp/CMakeLists.txt under {into}")
    return source


def build(jobs: int = 2, force: bool = False) -> Path:
    """Build llama-server for the installed version once; return the binary's path."""
    version = installed_version()
    target = binary_path(version)
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log = target.parent / "build.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="peerllm-llama-server-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "dl").mkdir()
        # Only llama-cpp-python itself from source: ":all:" would also force its build
        # backend (scikit-build-core and its own build deps) to be built from sources.
        _run([sys.executable, "-m", "pip", "download", "--no-deps",
              "--no-binary", "llama-cpp-python", "-d", str(tmp / "dl"),
              f"llama-cpp-python=={version}"], log)
        source = _unpack_sdist(tmp / "dl", tmp / "src")
        build_dir = tmp / "build"
        _run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS], log)
        _run(["cmake", "--build", str(build_dir), "--target", BINARY_NAME,
              "-j", str(jobs)], log)
        produced = build_dir / "bin" / BINARY_NAME
        if not produced.is_file():
            raise BuildError(f"the build finished but left no {produced}")
        partial = target.with_suffix(".partial")
        shutil.copy2(produced, partial)
        partial.replace(target)  # a half-copied binary is never mistaken for a build
    print(f"built {target}", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs")
    parser.add_argument("--force", action="store_true", help="rebuild even if built")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the binary's path if built, else exit 1")
    args = parser.parse_args(argv)
    if args.print_only:
        found = built_binary()
        if found is None:
            print(f"not built: {binary_path()}", file=sys.stderr)
            return 1
        print(found)
        return 0
    try:
        print(build(jobs=args.jobs, force=args.force))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
