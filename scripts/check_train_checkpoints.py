#!/usr/bin/env python3
"""Checks that checkpoints written by `cft`'s train stage load in transformers and peft and
give the logits `cft score` gives.

    CFT_CHECKPOINT_OUT=/tmp/ckpt cargo test --test train_stage export_checkpoints -- --ignored
    python3 scripts/check_train_checkpoints.py /tmp/ckpt target/release/cft

Compares, on a fixed sequence, the logits of
  - the full checkpoint in transformers vs `cft score` on it;
  - the fixture base + the PEFT adapter in peft vs `cft score` on the merged checkpoint;
  - the merged checkpoint in transformers vs the same.
Prints the largest absolute differences. Needs `pip install torch transformers peft`.
"""

import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

IDS = [5, 17, 33, 2, 90, 11, 42, 7]
BASE = os.path.join("tests", "fixtures", "models", "qwen2")


def cft_logits(cft, model_dir):
    out = subprocess.run(
        [cft, "score", "--model", model_dir, "--ids", ",".join(map(str, IDS)), "--logits", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return torch.tensor([row["logits"] for row in rows])


def hf_logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor([IDS])).logits[0].float()


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")


def main():
    out, cft = sys.argv[1], sys.argv[2]
    full = os.path.join(out, "full")
    merged = os.path.join(out, "lora", "model")
    adapter = os.path.join(out, "lora", "adapter")
    from peft import PeftModel

    d_full = (hf_logits(load(full)) - cft_logits(cft, full)).abs().max().item()
    peft_model = PeftModel.from_pretrained(load(BASE), adapter)
    d_peft = (hf_logits(peft_model) - cft_logits(cft, merged)).abs().max().item()
    d_merged = (hf_logits(load(merged)) - cft_logits(cft, merged)).abs().max().item()
    base_moved = (hf_logits(load(BASE)) - hf_logits(peft_model)).abs().max().item()
    print(f"full checkpoint: transformers vs cft score, max |diff| {d_full:.2e}")
    print(f"LoRA adapter in peft vs cft score of the merged checkpoint, max |diff| {d_peft:.2e}")
    print(f"merged checkpoint: transformers vs cft score, max |diff| {d_merged:.2e}")
    print(f"(the adapter moved the base logits by up to {base_moved:.2e})")


if __name__ == "__main__":
    main()
