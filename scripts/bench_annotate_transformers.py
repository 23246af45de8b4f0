#!/usr/bin/env python3
"""The paper's own counterfactual annotation (Eq. 5-7) with transformers, timed, to compare with
`cft bench annotate` on the same model and examples.

    cft bench annotate --manifest experiments/quickstart.toml --examples 32 --dump /tmp/ex.json
    python3 scripts/bench_annotate_transformers.py --dump /tmp/ex.json --threads 2

For each correct response y and each alternative rank j (2..k): one forward pass over [Q, y]
gives the j-th most likely token at every position t; then all positions of the response form
one left-padded batch [Q, y_<t, alt_j(t)], continued by `model.generate` (greedy, f32, eager
attention) for at most `max_new_tokens` tokens or until an end token. A branch fails when its
text's `#### N` answer differs from the gold one (the toy benchmark's format). Prints the time,
the branches, and how many failed per rank (cft's numbers for the same examples are printed by
`cft bench annotate`; they can differ where cft's end rule also stops at the template's stop
strings, which this script, like the paper's `generate` call, does not).

Not run by CI. Needs `pip install torch transformers safetensors tokenizers`.
"""

import argparse
import json
import os
import time

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def answer(text):
    """The number after the last `####`, as the toy grader reads it (None without one)."""
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().split("\n")[0].strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True, help="the file `cft bench annotate --dump` wrote")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.dump) as f:
        dump = json.load(f)
    model_dir = dump["model_dir"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    config = model.config
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    pad = config.pad_token_id if config.pad_token_id is not None else eos[0]
    max_new = dump["max_new_tokens"]

    start = time.perf_counter()
    branches, failed = 0, {}
    with torch.no_grad():
        for rank in dump["ranks"]:
            failed[rank] = 0
            for ex in dump["examples"]:
                prompt, response = ex["prompt_ids"], ex["response_ids"]
                ids = torch.tensor([prompt + response])
                logits = model(ids).logits[0]  # [len, vocab]
                rows = []
                for t in range(len(response)):
                    # the distribution of y_t given [Q, y_<t] is at position len(Q) + t - 1
                    top = torch.topk(logits[len(prompt) + t - 1], rank).indices
                    rows.append(prompt + response[:t] + [int(top[rank - 1])])
                width = max(len(r) for r in rows)
                input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=max_new,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=pad,
                )
                for t, row in enumerate(out):
                    generated = [int(x) for x in row[width:] if int(x) != pad]
                    branch = response[:t] + [rows[t][-1]] + generated
                    text = tokenizer.decode(branch, skip_special_tokens=True)
                    branches += 1
                    if answer(text) != ex["gold"].strip():
                        failed[rank] += 1
    seconds = time.perf_counter() - start
    print(
        f"transformers Eq. 7: {len(dump['examples'])} examples, ranks {dump['ranks']}, "
        f"{branches} branches in {seconds:.2f} s; failed per rank: {failed}"
    )


if __name__ == "__main__":
    main()
