#!/usr/bin/env python3
"""Writes tests/fixtures/data/: small made-up datasets in two HF layouts, each as JSONL and as
parquet files written by pyarrow the way HF datasets publishes them, for tests/parquet.rs.

- gsm8k.jsonl / gsm8k.snappy.parquet / gsm8k.zstd.parquet: openai/gsm8k's `main` layout
  (`question`, `answer` with `<<a*b=c>>` notes and a last `#### N` line). HF's files are
  written by pyarrow with its default codec, snappy; zstd is the other codec HF files use.
- math.jsonl / math.parquet: the MATH harness layout (`problem`, `level`, `type`,
  `solution` with a `\\boxed{}` answer, an integer `idx`), snappy, in two row groups.

The questions are generated here (no real data is committed): with commas in numbers,
quotes, non-ASCII text, newlines and a LaTeX fraction, so that the reader's text handling is
what is tested. Run by hand (needs pyarrow; CI does not run it):

    pip install pyarrow && python3 scripts/make_parquet_fixtures.py
"""

import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "data"


def gsm8k_rows():
    rows = []
    names = ["Ana", "Bjørn", "Zoë", "O'Neil", "李"]
    for i in range(23):
        a, b = 1000 + 37 * i, 3 + i % 5
        total = a * b
        name = names[i % len(names)]
        question = (
            f"{name} sells {a:,} \"widgets\" a day for {b} days.\n"
            f"How many widgets does {name} sell?"
        )
        answer = (
            f"{name} sells {a} * {b} = <<{a}*{b}={total}>>{total} widgets.\n"
            f"#### {total:,}"
        )
        rows.append({"question": question, "answer": answer})
    return rows


def math_rows():
    rows = []
    for i in range(9):
        p, q = i + 2, 2 * i + 3
        rows.append(
            {
                "problem": f"Compute $\\frac{{{p}}}{{{q}}} + \\frac{{{p}}}{{{q}}}$.",
                "level": f"Level {1 + i % 5}",
                "type": "Prealgebra",
                "solution": f"Doubling gives $\\boxed{{\\frac{{{2 * p}}}{{{q}}}}}$.",
                "idx": 100 + i,
            }
        )
    return rows


def write(name, rows, parquet_files):
    with open(OUT / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    table = pa.Table.from_pylist(rows)
    for file, kwargs in parquet_files:
        pq.write_table(table, OUT / file, **kwargs)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    write(
        "gsm8k",
        gsm8k_rows(),
        [
            ("gsm8k.snappy.parquet", {}),
            ("gsm8k.zstd.parquet", {"compression": "zstd"}),
        ],
    )
    write("math", math_rows(), [("math.parquet", {"row_group_size": 5})])
    print(f"wrote {OUT} with pyarrow {pa.__version__}")


if __name__ == "__main__":
    main()
