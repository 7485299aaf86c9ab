"""The resumable chunks of one (model, split) extraction, in its folder under STORE/.staging/extract/
(divergent.store.extract_job_dir).

Each chunk file holds the head outputs and embeddings of a contiguous run of examples
``[start, start + count)`` and the batch size that produced them; files are written atomically
(divergent._files: a temporary marked with the writing process, fsynced, renamed), so a
kill -9 leaves either a whole chunk or none, plus at most a temporary that any later process can
tell is a leftover. Chunks and job.json are never leftovers: they are what a rerun resumes from.
A resumed run reuses the recorded batch size, so on CPU it recomputes exactly the batches an
uninterrupted run would have computed (bit-identical arrays).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .._files import atomic_open, atomic_write_text, sha256_bytes, temp_is_leftover


def fingerprint(**parts) -> str:
    return sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode())[:16]


class ChunkDir:
    """The chunk folder of one extraction job (`path`: divergent.store.extract_job_dir)."""

    def __init__(self, path, fp: str):
        self.path = Path(path)
        self.fp = fp

    def open(self) -> list[dict]:
        """Create or validate the folder; return the usable chunks (contiguous from 0), dropping stale ones."""
        meta = self.path / "job.json"
        if self.path.exists():
            try:
                old = json.loads(meta.read_text()).get("fingerprint")
            except (OSError, json.JSONDecodeError):
                old = None
            if old != self.fp:
                shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        if not meta.exists():
            atomic_write_text(meta, json.dumps({"fingerprint": self.fp}))
        for junk in self.path.glob(".*.tmp"):  # temporaries of killed runs (never a live one's)
            if temp_is_leftover(junk):
                junk.unlink(missing_ok=True)
        chunks, end = [], 0
        for f in sorted(self.path.glob("chunk-*.npz")):
            try:
                with np.load(f, allow_pickle=False) as z:
                    start, count, bs = int(z["start"]), int(z["count"]), int(z["batch_size"])
            except Exception:  # noqa: BLE001 - a torn file cannot exist (atomic rename), but be safe
                f.unlink(missing_ok=True)
                continue
            if start != end:
                break  # non-contiguous leftovers: recompute from here
            chunks.append({"file": f, "start": start, "count": count, "batch_size": bs})
            end = start + count
        keep = {c["file"] for c in chunks}
        for f in self.path.glob("chunk-*.npz"):
            if f not in keep:
                f.unlink(missing_ok=True)
        return chunks

    def write(self, start: int, batch_size: int, head: np.ndarray | None, emb: np.ndarray) -> Path:
        final = self.path / f"chunk-{start:010d}.npz"
        arrays = {"start": np.int64(start), "count": np.int64(len(emb)), "batch_size": np.int64(batch_size), "emb": emb}
        if head is not None:
            arrays["head"] = head
        with atomic_open(final, point="chunk-written") as f:
            np.savez(f, **arrays)
        return final

    def load(self, chunks: list[dict]) -> tuple[np.ndarray | None, np.ndarray]:
        heads, embs = [], []
        for c in chunks:
            with np.load(c["file"], allow_pickle=False) as z:
                embs.append(z["emb"])
                if "head" in z.files:
                    heads.append(z["head"])
        head = np.concatenate(heads) if heads and len(heads) == len(chunks) else None
        return head, np.concatenate(embs)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
