"""Stage: bring the IMDB archive into the workspace from the first source that has it."""

from __future__ import annotations

import http.client
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from bert2lr.errors import UserError
from bert2lr.files import atomic_path, file_digest

log = logging.getLogger(__name__)

# "sha256:<64 hex>" or "md5:<32 hex>" (the original Stanford archive is only published with its MD5).
_HASH = re.compile(r"^(sha256|md5):([0-9a-fA-F]+)$")
_HEX_DIGITS = {"sha256": 64, "md5": 32}


class _Rejected(Exception):
    """A source that was read but is not the archive asked for (wrong length or hash)."""


def parse_hash(source: str, expected: str) -> tuple[str, str]:
    """Split "sha256:<hex>" into ("sha256", "<hex>"); a malformed value is a UserError."""
    match = _HASH.match(expected)
    if not match or len(match.group(2)) != _HEX_DIGITS[match.group(1)]:
        raise UserError(
            f"fetch.sources: {source}: hash {expected!r} is not 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'"
        )
    return match.group(1), match.group(2).lower()


def _copy(src, dst: Path, total: int | None, label: str) -> int:
    """Copy `src` to `dst` with a progress bar; return the bytes copied."""
    n = 0
    with open(dst, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=label) as bar:
        for block in iter(lambda: src.read(1 << 20), b""):
            out.write(block)
            n += len(block)
            bar.update(len(block))
    return n


def fetch(sources: list[tuple[str, str | None]], out: Path, base: Path = Path(".")) -> str:
    """Copy or download the archive to `out` from the first source that gives it; return that source.

    Each source is (local path or URL, expected hash or None). A source whose bytes do not match
    its hash, or fall short of the length its server announced, is rejected like an unreachable
    one and leaves nothing at `out`. Relative local paths are read from `base` (the project root,
    where dvc runs stages).
    """
    checks = [(source, parse_hash(source, expected) if expected else None) for source, expected in sources]
    tried = []
    for source, check in checks:
        algorithm = check[0] if check else "sha256"
        is_url = source.startswith(("http://", "https://"))
        try:
            with atomic_path(out) as tmp:
                if is_url:
                    with urllib.request.urlopen(source, timeout=30) as response:
                        length = response.headers.get("Content-Length")
                        total = int(length) if length and length.isdigit() else None
                        n = _copy(response, tmp, total, "download")
                else:
                    path = Path(source).expanduser()
                    path = path if path.is_absolute() else base / path
                    with open(path, "rb") as src:
                        total = path.stat().st_size
                        n = _copy(src, tmp, total, "copy")
                if total is not None and n != total:
                    raise _Rejected(f"{n} bytes of the {total} announced: cut short")
                digest = file_digest(tmp, algorithm)
                if check and digest != check[1]:
                    raise _Rejected(f"{algorithm} {digest[:12]}… but expected {check[1][:12]}…")
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError, _Rejected) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            tried.append(f"{source} ({reason})")
            log.info("fetch: %s rejected: %s", source, reason)
            continue
        log.info("fetch: %s -> %s (%s %s)", source, out, algorithm, digest)
        return source
    raise UserError(
        "no source gave the IMDB archive; tried: " + ("; ".join(tried) or "none")
        + " (set fetch.sources in params.yaml)"
    )
