"""Stage 1: bring the IMDB archive into the workspace from the first source that has it."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from bert2lr.errors import UserError
from bert2lr.files import atomic_path

log = logging.getLogger(__name__)


def _copy(src, dst: Path, total: int | None, label: str) -> None:
    with open(dst, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=label) as bar:
        for block in iter(lambda: src.read(1 << 20), b""):
            out.write(block)
            bar.update(len(block))


def fetch(sources: list[str], out: Path, base: Path = Path(".")) -> str:
    """Copy or download the archive to `out`; return the source used.

    Relative local paths are read from `base` (the project root, where dvc runs stages).
    """
    tried = []
    sources = [s if isinstance(s, str) else s[0] for s in sources]  # (source, hash): hashes not checked yet
    for source in sources:
        is_url = source.startswith(("http://", "https://"))
        try:
            with atomic_path(out) as tmp:
                if is_url:
                    with urllib.request.urlopen(source, timeout=30) as response:
                        length = response.headers.get("Content-Length")
                        _copy(response, tmp, int(length) if length else None, "download")
                else:
                    path = Path(source).expanduser()
                    path = path if path.is_absolute() else base / path
                    with open(path, "rb") as src:
                        _copy(src, tmp, path.stat().st_size, "copy")
        except (OSError, urllib.error.URLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            tried.append(f"{source} ({reason})")
            log.info("fetch: %s unavailable: %s", source, reason)
            continue
        log.info("fetch: %s -> %s", source, out)
        return source
    raise UserError(
        "no source of the IMDB archive is reachable; tried: " + "; ".join(tried)
        + " (set fetch.sources in params.yaml)"
    )
