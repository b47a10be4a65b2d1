"""``aggregator publish DIR``: the published files for a static web server, written atomically.

Each file is written to a temporary file in its own directory, flushed to disk and renamed over
the old one (``os.replace``), so a web server reading the directory sees the old file or the new
one, never a half-written one. Unchanged files are left alone; each file's mtime is set to the
newest change it shows, so a static server's Last-Modified means what it says.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from aggregator.errors import PublishError
from aggregator.publish.render import FORMATS, RenderedFile
from aggregator.publish.site import PageStore, PublishedWatchlist, build_all_pages, build_site


def write_atomic(path: Path, data: bytes, mtime: float | None = None) -> bool:
    """Write ``data`` to ``path`` atomically; False (nothing written) when it already holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            if mtime is not None:
                os.utime(path, (mtime, mtime))
            return False
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; a web server must read it
        if mtime is not None:
            os.utime(tmp_name, (mtime, mtime))
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_files(
    files: Iterable[RenderedFile],
    out_dir: Path,
    *,
    precompress: bool = False,
    on_file: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write rendered files under ``out_dir`` (paths as in the URLs); stale feeds are removed.

    ``on_file(n)`` is told after each file. A file that cannot be written (a full disk, no
    permission, a path that is a file) raises ``PublishError`` naming it: every file written
    before it is complete and current, every other one still holds its previous version.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PublishError(f"{out_dir} is a file, not a folder: give the folder to publish into")
    written: list[Path] = []
    keep: set[Path] = set()
    for item in files:
        target = out_dir / item.path
        mtime = item.updated.astimezone(UTC).timestamp()
        _write(target, item.body, mtime, len(written))
        keep.add(target)
        written.append(target)
        if precompress:
            gz_target = target.with_name(target.name + ".gz")
            _write(gz_target, gzip_bytes(item.body), mtime, len(written))
            keep.add(gz_target)
        if on_file is not None:
            on_file(len(written))
    _remove_stale_feeds(out_dir / "feeds", keep)
    _remove_stale_pages(out_dir / "developments", keep)
    _remove_stale_pages(out_dir / "topics", keep)
    return written


def _write(target: Path, data: bytes, mtime: float, done: int) -> None:
    try:
        write_atomic(target, data, mtime)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = os.fsdecode(exc.filename) if exc.filename else str(target)
        raise PublishError(
            f"cannot write {where}: {reason}; {done} file{'' if done == 1 else 's'} "
            "published before it, the others keep their previous version"
        ) from exc


def _remove_stale_feeds(feeds_dir: Path, keep: set[Path]) -> None:
    """Feeds of topics no longer in the watchlist go, so readers get 404 rather than stale news."""
    if not feeds_dir.is_dir():
        return
    suffixes = {f".{fmt}" for fmt in FORMATS}
    for path in feeds_dir.iterdir():
        base = path.with_suffix("") if path.suffix == ".gz" else path
        if base.suffix in suffixes and path not in keep:
            with contextlib.suppress(OSError):
                path.unlink()


def _remove_stale_pages(pages_dir: Path, keep: set[Path]) -> None:
    """Pages of pruned developments and dropped topics (and their older pages) go too."""
    if not pages_dir.is_dir():
        return
    for path in sorted(pages_dir.rglob("*"), reverse=True):
        base = path.with_suffix("") if path.suffix == ".gz" else path
        if path.is_file() and base.suffix == ".html" and path not in keep:
            with contextlib.suppress(OSError):
                path.unlink()
        elif path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty


def gzip_bytes(data: bytes) -> bytes:
    """gzip with a fixed header time, so equal input gives equal output (and equal ETags)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def publish_dir(
    store: PageStore,
    watchlist: PublishedWatchlist,
    out_dir: str | os.PathLike[str],
    base_url: str,
    *,
    now: datetime | None = None,
    precompress: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Path]:
    """Render every feed, the index page, the OPML, every topic page and every published
    development's page from the store into ``out_dir``; ``progress("write", done, total)`` is
    told after each file written."""
    files = [
        *build_site(store, watchlist, base_url, now or datetime.now(UTC)),
        *build_all_pages(store, watchlist, base_url),
    ]
    total = len(files)
    return write_files(
        files,
        Path(out_dir),
        precompress=precompress,
        on_file=None if progress is None else lambda done: progress("write", done, total),
    )
