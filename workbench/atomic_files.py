"""Files and folders that appear whole or not at all.

A reader (or `upload_to_hub.py`) must never see a half-written `metrics.json`, a 0-byte
`config.json` or a run folder whose figures belong to another run. Each file is written to a
hidden temporary sibling and moved over the target with `os.replace`, which is atomic on one file
system; a folder is built in a hidden sibling `.<kind>-partial-<name>-<pid>-<random>` and renamed
into place when complete. The pid in the name lets the next run remove the partial folders of
processes that were killed (SIGKILL leaves no chance to clean up) without touching those of a run
that is still going.
"""

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["replacing", "write_text", "write_bytes", "write_json", "NonFiniteError", "first_non_finite",
           "partial_folder", "clean_stale_partials", "move_into_place"]


class NonFiniteError(ValueError):
    """A JSON document would hold NaN or infinity (not JSON; a figure that must not be published)."""


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path, data):
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data
    return Path(path)


def write_text(path, text, encoding="utf-8"):
    return write_bytes(path, text.encode(encoding))


def first_non_finite(obj, where=""):
    """(dotted path, value) of the first NaN or infinity in a JSON-like object, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return (where or "<top level>", obj)
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = first_non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def write_json(path, obj, **dumps_kwargs):
    """json.dumps(allow_nan=False), written atomically; a NaN or infinity is an error naming its key."""
    bad = first_non_finite(obj)
    if bad:
        raise NonFiniteError(f"{Path(path).name}: {bad[0]} is {bad[1]}, not a number JSON can hold; "
                             f"refusing to write it")
    return write_text(path, json.dumps(obj, allow_nan=False, **dumps_kwargs))


# -- folders ----------------------------------------------------------------------------------------

_PARTIAL = re.compile(r"^\.(?P<kind>[a-z]+)-partial-.*-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def unusable_output(folder, overwrite):
    """Why `folder` cannot receive a new run or export, or None: "is a file", "is under X, which is a
    file", or "not empty" (a non-empty folder without overwrite). Checked before any work."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            return "is a file" if parent == folder else f"is under {parent}, which is a file"
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        return "not empty"
    return None


def partial_folder(target, kind):
    """A new hidden folder beside `target` (created with its parents) to build `target` in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-partial-{target.name}-{os.getpid()}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    return tmp


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_partials(parent, kind):
    """Remove `.<kind>-partial-*` folders in `parent` left by processes that no longer exist."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        m = _PARTIAL.match(p.name)
        if m and m["kind"] == kind and p.is_dir() and not p.is_symlink() and not _alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def fresh_partial_folder(target, kind):
    """`partial_folder(target, kind)` after removing the partial folders that killed runs of the same
    kind left beside `target` (what every command that builds a folder does first)."""
    clean_stale_partials(Path(target).parent, kind)
    return partial_folder(target, kind)


def move_into_place(tmp, target, kind):
    """Rename the finished folder `tmp` to `target`, replacing what is there.

    A non-empty `target` cannot be renamed over, so it is first renamed to a partial folder of this
    process (cleaned on the next run if we are killed in between), then removed.
    """
    tmp, target = Path(tmp), Path(target)
    old = None
    if target.exists() or target.is_symlink():
        if target.is_dir() and not target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{kind}-partial-{target.name}-{os.getpid()}-", dir=target.parent))
            os.rename(target, old / "old")
        else:
            target.unlink()
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
