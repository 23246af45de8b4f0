#!/usr/bin/env python3
"""Checks what `cft export` writes with the tools it is for (run by hand; CI does not).

    python3 scripts/check_export.py --cft target/release/cft --model DIR [--model DIR ...]
        [--annotations FILE.jsonl FILE.parquet]

For each exported model directory: transformers loads it (AutoModelForCausalLM, AutoTokenizer,
GenerationConfig) and its next-token log-probabilities of a fixed token sequence equal those
`cft score` prints for the same directory (within 1e-4). Where the directory holds a PEFT
adapter (`adapter/`), peft loads it onto the model before fine-tuning (`--base` DIR) and the
adapted model's log-probabilities equal the merged export's.

With --annotations: HF datasets loads the JSONL and the parquet export, and both give the
same rows; pyarrow reads the parquet's schema (printed).

Needs torch, transformers, peft, datasets (pip install torch transformers peft datasets).
"""

import argparse
import json
import math
import pathlib
import subprocess
import sys

IDS = [3, 17, 42, 9, 100, 5, 77, 250, 11]


def cft_logprobs(cft, model):
    out = subprocess.run(
        [cft, "score", "--ids", ",".join(map(str, IDS)), "--json", "--model", str(model)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [json.loads(l)["next_logprob"] for l in out.splitlines()][:-1]


def hf_logprobs(model):
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    return [lp[i, IDS[i + 1]].item() for i in range(len(IDS) - 1)]


def close(a, b, what):
    worst = max(abs(x - y) for x, y in zip(a, b))
    ok = len(a) == len(b) and worst < 1e-4
    print(f"{'ok  ' if ok else 'FAIL'} {what}: max |difference| {worst:.2e}")
    return ok


def check_model(cft, directory, base):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    directory = pathlib.Path(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype="float32").eval()
    AutoTokenizer.from_pretrained(directory)
    GenerationConfig.from_pretrained(directory)
    ours = cft_logprobs(cft, directory)
    ok = close(hf_logprobs(model), ours, f"transformers vs cft score, {directory}")
    adapter = directory / "adapter"
    if adapter.is_dir():
        if base is None:
            print(f"FAIL {adapter}: give --base, the model before fine-tuning")
            return False
        from peft import PeftModel

        plain = AutoModelForCausalLM.from_pretrained(base, dtype="float32").eval()
        before = hf_logprobs(plain)  # peft wraps `plain` in place
        adapted = PeftModel.from_pretrained(plain, adapter).eval()
        ok &= close(hf_logprobs(adapted), ours, f"peft adapter on {base} vs the merged export")
        # ... and the adapter is not a no-op: the base model alone scores differently.
        moved = max(abs(x - y) for x, y in zip(before, ours))
        print(f"{'ok  ' if moved > 1e-3 else 'FAIL'} the adapter moves log-probs by up to {moved:.3f}")
        ok &= moved > 1e-3
    return ok


def check_annotations(jsonl, parquet):
    import datasets
    import pyarrow.parquet as pq

    a = datasets.load_dataset("json", data_files=str(jsonl), split="train")
    b = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    print(pq.read_schema(parquet))
    ok = len(a) == len(b)
    for x, y in zip(a, b):
        for key in x:
            if key == "weights":
                for m, w in x[key].items():
                    ok &= all(math.isclose(p, q, rel_tol=1e-6) for p, q in zip(w, y[key][m]))
                    ok &= len(w) == len(y[key][m])
            else:
                ok &= x[key] == y[key]
    print(f"{'ok  ' if ok else 'FAIL'} datasets: {len(a)} JSONL rows, {len(b)} parquet rows, equal")
    return ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cft", default="target/release/cft")
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--base", help="the model before fine-tuning, for a LoRA export's adapter")
    p.add_argument("--annotations", nargs=2, metavar=("JSONL", "PARQUET"))
    args = p.parse_args()
    ok = True
    for m in args.model:
        ok &= check_model(args.cft, m, args.base)
    if args.annotations:
        ok &= check_annotations(*args.annotations)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
