"""The one owner of the run-directory format.

Layout::

    run_dir/config.json              the resolved config (rewritten atomically)
    run_dir/run.json                 status, data description, versions
    run_dir/metrics.jsonl            one JSON line per log interval, plus eval/* records
    run_dir/probes.jsonl             the doctor's sample probes
    run_dir/diagnostics.jsonl        the doctor's diagnoses and actions
    run_dir/samples/step_*.png       preview grids
    run_dir/curves.png               loss curves
    run_dir/checkpoints/latest       name of the newest complete checkpoint
    run_dir/checkpoints/step_*/      {net}.safetensors, {net}_ema.safetensors, optim.pt, rng_<rank>.pt, state.json
    run_dir/frozen/{net}.safetensors networks that are never optimised, written once at start
    run_dir/best/                    the weights kept best by the evaluator, with best.json
    run_dir/eval.json                the last ``gankit eval``
    run_dir/csv/*.csv, run_dir/tb/   the csv and tensorboard trackers' files (gankit.tracking)
    run_dir/.lock                    held by the one process training the run (pid, host)

Every writer goes through this module: whole files are replaced atomically (temporary file in the
same folder, fsync, ``os.replace``, fsync of the folder), JSON lines are appended one record per
``write`` and read tolerantly (a line torn by a crash mid-write is skipped), and a stream is cut
back to a step (on resume, on rollback) by an atomic rewrite, so a crash at any instant leaves
either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError

#: JSON-lines streams by name and the file each is appended to (evaluation records share the
#: metrics file, so curves and the doctor's replay see them in step order).
STREAMS = {"metrics": "metrics.jsonl", "eval": "metrics.jsonl", "probes": "probes.jsonl",
           "diagnostics": "diagnostics.jsonl"}


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (checkpoint and export manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (temporary file, fsync, rename, fsync folder)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def read_jsonl(path: Path | None) -> list[dict[str, Any]]:
    """The records of a JSON-lines file ([] when missing); blank and torn lines are skipped."""
    if path is None or not Path(path).exists():
        return []
    out = []
    # bytes decoded leniently: a line cut inside a multi-byte character is just a torn line
    for ln in Path(path).read_bytes().decode("utf-8", errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
        if isinstance(rec, dict):
            out.append(rec)
    return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace a JSON-lines file by ``records`` atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


class RunDir:
    """Paths and I/O of one run directory (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths -------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def frozen(self) -> Path:
        return self.path / "frozen"

    @property
    def best(self) -> Path:
        return self.path / "best"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def eval_json(self) -> Path:
        return self.path / "eval.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    def stream(self, name: str) -> Path:
        if name not in STREAMS:
            raise ValueError(f"unknown run stream '{name}'; streams: {', '.join(STREAMS)}")
        return self.path / STREAMS[name]

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def exists(self) -> bool:
        return self.config.is_file()

    # -- the writer's lock ---------------------------------------------------------------------
    def lock_owner(self) -> dict[str, Any] | None:
        """Who holds the lock, or ``None`` when nobody does: no lock file, or a stale one (its
        process, on this host, is gone). A lock from another host is taken as live (we cannot
        see its processes); an unreadable lock file counts as stale."""
        try:
            owner = json.loads(self.lock_file.read_bytes().decode("utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            return None  # torn or foreign content: nobody can hold it
        if host == socket.gethostname() and not _pid_alive(pid):
            return None
        return owner

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory's writer lock for the block (train and resume take it).

        The lock file holds this process's pid and host; it is created exclusively, so two
        processes cannot both take it. A stale lock (its process died: SIGKILL, power loss) is
        replaced. A live one is a :class:`ConfigError` naming its owner. Released on exit.
        """
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.lock_owner()
                if owner is not None:
                    raise ConfigError(
                        f"{self.path} is in use by process {owner['pid']} on {owner['host']} "
                        f"(since {owner.get('started', '?')}); wait for it to finish or stop it "
                        f"(a lock left by a process that no longer runs: delete "
                        f"{self.lock_file})") from None
                with contextlib.suppress(FileNotFoundError):
                    self.lock_file.unlink()  # stale
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            break
        else:
            raise ConfigError(f"could not take the lock {self.lock_file}")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                owner = json.loads(self.lock_file.read_text())
                if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                    self.lock_file.unlink()

    # -- config and status -------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The saved config as a dict; a missing or corrupt file is a :class:`CheckpointError`."""
        if not self.path.is_dir():
            raise CheckpointError(f"no such run directory: {self.path}")
        try:
            raw = json.loads(self.config.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{self.path} is not a gankit run directory (no config.json)") \
                from None
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise CheckpointError(f"{self.config} is corrupt ({type(e).__name__})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
            raise CheckpointError(f"{self.config} is not a gankit config")
        return raw

    def write_config(self, cfg: dict[str, Any]) -> None:
        atomic_write_json(self.config, cfg)

    def read_info(self) -> dict[str, Any]:
        """``run.json`` ({} when missing); corrupt is a :class:`CheckpointError`."""
        if not self.run_json.exists():
            return {}
        try:
            info = json.loads(self.run_json.read_text())
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise CheckpointError(f"{self.run_json} is corrupt ({type(e).__name__})") from None
        if not isinstance(info, dict):
            raise CheckpointError(f"{self.run_json} is corrupt (not a JSON object)")
        return info

    def data_info(self) -> dict[str, Any]:
        info = self.read_info().get("data_info")
        if not isinstance(info, dict):
            raise CheckpointError(f"{self.path} is not a gankit run directory (run.json has no "
                                  f"data description)")
        return info

    def write_status(self, status: str, **extra: Any) -> None:
        """Set ``run.json``'s status (and any other keys), creating it with the versions."""
        info = self.read_info() if self.run_json.exists() else {}
        if not info:
            from importlib.metadata import PackageNotFoundError, version

            import torch

            try:
                ours = version("gankit")
            except PackageNotFoundError:  # running from a source tree without installing
                ours = "unknown"
            info = {"gankit": ours, "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        info.update(extra)
        info["status"] = status
        atomic_write_json(self.run_json, info)

    # -- JSON-lines streams -------------------------------------------------------------------
    def append(self, stream: str, rec: dict[str, Any]) -> None:
        """Append one record (one ``write`` of one line) to a stream."""
        with open(self.stream(stream), "a") as f:
            f.write(json.dumps(rec) + "\n")

    def read(self, stream: str) -> list[dict[str, Any]]:
        return read_jsonl(self.stream(stream))

    def truncate(self, stream: str, step: int,
                 keep: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Drop a stream's records after ``step`` (those ``keep`` approves stay), atomically.

        A torn last line is dropped too; nothing happens when the file does not exist.
        """
        path = self.stream(stream)
        if not path.exists():
            return
        recs = read_jsonl(path)
        write_jsonl(path, [r for r in recs
                           if r.get("step", 0) <= step or (keep is not None and keep(r))])
