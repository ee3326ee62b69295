"""SAM 2.1 checkpoints: where they come from, where they are kept, how they are checked.

A checkpoint spec is one of
  * ``auto``            - Meta's official file for the model size, downloaded once into the cache dir;
  * ``random``          - seeded random weights for the real architecture (tests and load tests only);
  * ``random-sharp``    - the same, with the mask decoder rewired so that masks have real 0 and 255 pixels around
                          the clicks (tests of what a mask holds only; deployments/sam_model.py says how);
  * a local file path   - verified against ``checkpoint_sha256``, or against Meta's digest when it bears an
                          official file name; any other file is refused unless ``allow_unverified`` is set;
  * an http(s) URL      - downloaded into the cache dir, ``checkpoint_sha256`` required.
Every file is verified by SHA-256 before ``torch.load(..., weights_only=True)`` sees it, except a local file that
its owner explicitly loads unverified (``allow_unverified_checkpoint: true``), which is logged as such.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .settings import MODEL_SIZES

logger = logging.getLogger(__name__)

RANDOM = "random"
RANDOM_SHARP = "random-sharp"
AUTO = "auto"
_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"


@dataclass(frozen=True)
class OfficialCheckpoint:
    filename: str
    config: str  # Hydra config name inside the sam2 package
    sha256: str
    size_bytes: int

    @property
    def url(self) -> str:
        return f"{_BASE_URL}/{self.filename}"


# Meta publishes no checksum file; these digests were cross-checked in several public projects that
# verify the same downloads (e.g. micro-sam's HASHES table) and match Hugging Face's LFS records.
OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    "tiny": OfficialCheckpoint(
        "sam2.1_hiera_tiny.pt", "configs/sam2.1/sam2.1_hiera_t.yaml",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156_008_466),
    "small": OfficialCheckpoint(
        "sam2.1_hiera_small.pt", "configs/sam2.1/sam2.1_hiera_s.yaml",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184_416_285),
    "base_plus": OfficialCheckpoint(
        "sam2.1_hiera_base_plus.pt", "configs/sam2.1/sam2.1_hiera_b+.yaml",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323_606_802),
    "large": OfficialCheckpoint(
        "sam2.1_hiera_large.pt", "configs/sam2.1/sam2.1_hiera_l.yaml",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898_083_611),
}


class WeightsError(RuntimeError):
    """A checkpoint could not be found, fetched or verified; the message says how to fix it."""


def default_cache_dir() -> Path:
    env = os.environ.get("BGREMOVE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bgremove"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected_sha256: str) -> None:
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise WeightsError(
            f"checkpoint {path} failed verification: SHA-256 is {actual}, expected {expected_sha256}. "
            "The file is corrupt, truncated or not the one named; delete it and download it again."
        )


def download(url: str, dest: Path, sha256: str, progress: bool = True, timeout_s: float = 30.0) -> Path:
    """Downloads ``url`` to ``dest`` atomically (temp file, verify, rename), with a progress bar."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {dest.name}", disable=not progress) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        verify(tmp, sha256)
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(
            f"could not download the checkpoint from {url} ({exc}). Without network access, download it "
            f"elsewhere and put it at {dest} (or point BGREMOVE_CHECKPOINT / `checkpoint:` at the file)."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """What the model factory loads: a verified file, or the seeded random weights."""

    path: Path | None  # None means random weights
    seed: int = 0
    sharp: bool = False  # random-sharp: the random weights with the test mask decoder (sam_model.sharpen)

    @property
    def is_random(self) -> bool:
        return self.path is None


def resolve(model_size: str, spec: str = AUTO, sha256: str | None = None, cache_dir: Path | None = None,
            download_missing: bool = True, progress: bool = True, seed: int = 0,
            allow_unverified: bool = False) -> ResolvedCheckpoint:
    """Turns a checkpoint spec into a verified local file (downloading it if needed). ``allow_unverified`` lets a
    local file with no known SHA-256 through (logged); nothing else skips verification."""
    if model_size not in OFFICIAL_CHECKPOINTS:
        raise WeightsError(f"unknown model size {model_size!r}; choose one of {', '.join(MODEL_SIZES)}")
    spec = (spec or AUTO).strip()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    official = OFFICIAL_CHECKPOINTS[model_size]

    if spec in (RANDOM, RANDOM_SHARP):
        return ResolvedCheckpoint(path=None, seed=seed, sharp=spec == RANDOM_SHARP)

    if spec == AUTO or spec.startswith(("http://", "https://")):
        url = official.url if spec == AUTO else spec
        expected = official.sha256 if spec == AUTO else sha256
        if not expected:
            raise WeightsError(f"checkpoint URL {url} needs checkpoint_sha256 so the download can be verified")
        name = official.filename if spec == AUTO else url.split("?", 1)[0].rsplit("/", 1)[-1]
        dest = cache_dir / (name or "checkpoint.pt")
        if dest.exists():
            verify(dest, expected)
            return ResolvedCheckpoint(dest)
        if not download_missing:
            raise WeightsError(
                f"no checkpoint at {dest}. Download {url} (SHA-256 {expected}) and put it there, "
                f"or run `bgremove weights download --model {model_size}`."
            )
        logger.info("downloading %s to %s", url, dest)
        return ResolvedCheckpoint(download(url, dest, expected, progress=progress))

    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"checkpoint file {path} does not exist. Download {official.url} and put it there, "
            f"or set checkpoint to 'auto' to download it into {cache_dir}."
        )
    expected = sha256 or next((c.sha256 for c in OFFICIAL_CHECKPOINTS.values() if c.filename == path.name), None)
    if expected:
        verify(path, expected)
    elif allow_unverified:
        logger.warning("checkpoint %s is loaded UNVERIFIED (allow_unverified_checkpoint is set): its SHA-256 is "
                       "%s; set checkpoint_sha256 to that to verify it from now on", path, sha256_of(path))
    else:
        raise WeightsError(
            f"checkpoint file {path} is not one of Meta's official files, so nothing says what it should contain. "
            f"Set checkpoint_sha256 (or BGREMOVE_CHECKPOINT_SHA256) to its SHA-256 (`sha256sum {path}`) once you "
            "trust it, or set allow_unverified_checkpoint: true to load it unverified."
        )
    return ResolvedCheckpoint(path)


def load_state_dict(source: Path | bytes) -> dict:
    """Loads a SAM 2 checkpoint safely: tensors only, never arbitrary pickled code."""
    import torch

    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    checkpoint = torch.load(handle, map_location="cpu", weights_only=True)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise WeightsError("checkpoint does not hold a SAM 2 state dict (expected {'model': {...}})")
    return state


def list_cached(cache_dir: Path | None = None) -> list[dict]:
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    rows = []
    for size, ckpt in OFFICIAL_CHECKPOINTS.items():
        path = cache_dir / ckpt.filename
        rows.append({"model": size, "file": str(path), "present": path.exists(),
                     "size_mb": round(ckpt.size_bytes / 1e6, 1), "url": ckpt.url, "sha256": ckpt.sha256})
    return rows
