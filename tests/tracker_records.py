"""Read what each tracker wrote, from its own files, as the tracker stores it (no mmr1kit code in between).

- TensorBoard: the event files, through TensorBoard's own `EventAccumulator`.
- trackio: its local SQLite store (`<TRACKIO_DIR>/<project>.db`), table `metrics`, with `sqlite3`.
- wandb (offline): the run's `.wandb` file, a LevelDB-style log of `wandb_internal_pb2.Record` protobufs. Read here
  by hand because wandb 0.31 no longer ships a Python reader (its Go `wandb-core` reads and syncs it); the format is
  a 7-byte header (`:W&B`, magic, version), then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32,
  length, type: 1 full, 2 first, 3 middle, 4 last).
"""

import json
import sqlite3
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def tensorboard_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """`{tag: [(step, value), ...]}` of every scalar in the event files under `logdir`, as TensorBoard shows them
    (points a restart purged are gone; a step written twice is there twice)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tensorboard_texts(logdir, tag: str) -> dict[int, str]:
    """`{step: text}` of a text summary (`add_text(tag, ...)` is stored as the tensor `<tag>/text_summary`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(f"{tag}/text_summary")}


def trackio_rows(store, project: str, run: str) -> list[tuple[int, dict]]:
    """`[(step, metrics)]` of every `trackio.log` call of `run`, in the order they were stored."""
    db = sqlite3.connect(Path(store) / f"{project}.db")
    try:
        rows = db.execute("SELECT step, metrics FROM metrics WHERE run_name = ? ORDER BY id", (run,)).fetchall()
    finally:
        db.close()
    return [(step, json.loads(metrics)) for step, metrics in rows]


def wandb_records(run_folder, timeout: float = 30.0) -> list:
    """Every `Record` of the offline run folder's `run-<id>.wandb` file, in order, once the file is complete.

    wandb 0.31's writer is its own process (wandb-core): `wandb.finish()` can return before it has flushed the file,
    so the file is read again until it holds the run's `exit` record (or `timeout` seconds have passed).
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_file_records(run_folder)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _wandb_file_records(run_folder) -> list:
    from wandb.proto import wandb_internal_pb2

    (path,) = Path(run_folder).glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb log"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zero padding up to the block's end
            pos += BLOCK - pos % BLOCK
            continue
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # full or last chunk: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(run_folder) -> list[dict]:
    """Every `wandb.log` row of the offline run, keys to decoded values."""
    rows = []
    for record in wandb_records(run_folder):
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def wandb_summary(run_folder) -> dict:
    """The run's summary as its `summary` records left it (later updates win)."""
    summary = {}
    for record in wandb_records(run_folder):
        if record.WhichOneof("record_type") == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
    return summary


def wandb_artifact_files(run_folder) -> dict[str, list[str]]:
    """`{artifact name: [paths in its manifest]}` of the artifacts the run logged (tables with images are some)."""
    out = {}
    for record in wandb_records(run_folder):
        if record.WhichOneof("record_type") == "artifact":
            out.setdefault(record.artifact.name, []).extend(e.path for e in record.artifact.manifest.contents)
    return out
