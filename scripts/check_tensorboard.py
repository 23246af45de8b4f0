#!/usr/bin/env python3
"""Reads the TensorBoard event files `cft report` writes with TensorBoard's own readers, and
checks them against the report's numbers.

    cft report experiments/quickstart.toml
    python3 scripts/check_tensorboard.py cache/reports/quickstart

For every run under `<report folder>/tensorboard/`:
  - every record through TensorBoard's record reader, which checks both CRCs of each record,
    and each record parsed as TensorBoard's `Event` protobuf; the first says `brain.Event:2`;
  - the scalars through `EventAccumulator` (what the dashboard reads): tags, steps, values,
    steps increasing within a tag; and the run names TensorBoard's `EventMultiplexer` finds
    in the folder, one per run directory;
and, from `report.json` beside it, each chosen cell's loss curve and each benchmark's
accuracy (and the base model's) equal the run's `train/loss` and `eval/<bench>/accuracy`
to float32 precision. Prints one line per run, exits 1 on any mismatch. Not run by CI;
needs `pip install tensorboard`.
"""

import json
import math
import os
import sys

from tensorboard.backend.event_processing import event_accumulator, event_multiplexer
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow


def records(path):
    """Every record of an event file, CRCs checked by TensorBoard's reader."""
    reader = pywrap_tensorflow.PyRecordReader_New(path, 0, None, None)
    out = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return out
        out.append(reader.record())


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def main(folder):
    root = os.path.join(folder, "tensorboard")
    problems = []
    runs = {}
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if "tfevents" in f):
            path = os.path.join(dirpath, name)
            run = os.path.relpath(dirpath, root)
            events = []
            try:
                for data in records(path):
                    e = event_pb2.Event()
                    e.ParseFromString(data)
                    events.append(e)
            except errors.DataLossError as e:
                problems.append(f"{run}: {e.message}")
                continue
            if not events or events[0].file_version != "brain.Event:2":
                problems.append(f"{run}: the first event is not the file version")
            acc = event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0})
            acc.Reload()
            scalars = {t: acc.Scalars(t) for t in acc.Tags()["scalars"]}
            for tag, points in scalars.items():
                steps = [p.step for p in points]
                if steps != sorted(steps):
                    problems.append(f"{run} {tag}: steps out of order {steps}")
                if not all(math.isfinite(p.value) for p in points):
                    problems.append(f"{run} {tag}: a value is not finite")
            runs[run] = scalars
            n = sum(len(p) for p in scalars.values())
            steps = sorted({p.step for ps in scalars.values() for p in ps})
            span = f"steps {steps[0]}-{steps[-1]}" if steps else "no steps"
            print(f"{run}: {len(events)} events, {len(scalars)} tags, {n} scalars, {span}")

    # The run names TensorBoard's server gives the folders (what its run selector groups).
    mux = event_multiplexer.EventMultiplexer().AddRunsFromDirectory(root)
    found = sorted(mux.Runs())
    print(f"TensorBoard's runs: {', '.join(found)}")
    if found != sorted(runs):
        problems.append(f"TensorBoard finds runs {found}, the files are {sorted(runs)}")

    with open(os.path.join(folder, "report.json")) as f:
        report = json.load(f)
    benches = report["benchmarks"]
    checked = 0
    for block in report["blocks"]:
        model = block["model"]
        names = {row["label"]: row["method"] for row in block["rows"]}
        for row in block["rows"]:
            run = f"{model}/base" if row["method"] == "base" else None
            if row["cell"] is not None:
                run = f"{model}/{row['method']}/{row['cell']}"
            if run is None:
                continue
            for bench, score in zip(benches, row["scores"]):
                if score is None:
                    continue
                points = runs.get(run, {}).get(f"eval/{bench}/accuracy", [])
                if len(points) != 1 or not close(points[0].value, score):
                    problems.append(f"{run}: eval/{bench}/accuracy {points} != {score}")
                checked += 1
        for t in report["training"]:
            if t["model"] != model or not t["curve"]:
                continue
            run = f"{model}/{names.get(t['method'], t['method'])}/{t['cell']}"
            points = [(p.step, p.value) for p in runs.get(run, {}).get("train/loss", [])]
            want = [(int(s), v) for s, v in t["curve"]]
            if len(points) != len(want) or not all(
                a[0] == b[0] and close(a[1], b[1]) for a, b in zip(points, want)
            ):
                problems.append(f"{run}: train/loss differs from the report's curve")
            checked += 1
    print(f"{len(runs)} runs; {checked} report numbers and curves compared")
    for p in problems:
        print("MISMATCH", p)
    return 1 if problems or not runs else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
