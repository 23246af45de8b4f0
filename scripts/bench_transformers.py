#!/usr/bin/env python3
"""Batched greedy decoding throughput with transformers, to compare with `cft bench generate`.

    python3 scripts/bench_transformers.py --make /tmp/bench-model   # a random ~3.7M-parameter Qwen2
    cft bench generate --model /tmp/bench-model --batch 1,8,64       # (release build)
    python3 scripts/bench_transformers.py --model /tmp/bench-model --batch 1,8,64

Same measurement as the Rust side: `--batch` prompts of `--prompt-len` pseudo-random ids,
`--new-tokens` greedy steps with EOS ignored, one untimed warm-up, time includes prefill.
Runs `model.generate` (eager attention, f32, CPU, its default dynamic KV cache).
Not run by CI. Needs `pip install torch transformers safetensors tokenizers`.
"""

import argparse
import os
import shutil
import time

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

FIXTURE_TOKENIZER = os.path.join("tests", "fixtures", "models", "qwen2")


def make(directory):
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=2048,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.1,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config).float()
    model.save_pretrained(directory)
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(os.path.join(FIXTURE_TOKENIZER, name), directory)
    print(f"wrote {directory}: {sum(p.numel() for p in model.parameters())} parameters")


def bench(directory, batches, prompt_len, new_tokens, threads):
    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    print(f"transformers, {torch.get_num_threads()} threads, prompt {prompt_len}, {new_tokens} new tokens")
    for b in batches:
        ids = torch.randint(0, vocab, (b, prompt_len), generator=g)
        mask = torch.ones_like(ids)

        def run(n):
            with torch.no_grad():
                return model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )

        run(2)
        start = time.perf_counter()
        out = run(new_tokens)
        seconds = time.perf_counter() - start
        tokens = (out.shape[1] - prompt_len) * b
        print(f"batch {b:>3}: {tokens:>6} tokens in {seconds:>7.3f} s = {tokens / seconds:>9.1f} tokens/s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make", metavar="DIR", help="write the random benchmark model here and exit")
    p.add_argument("--model", metavar="DIR")
    p.add_argument("--batch", default="1,8,64")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    if a.make:
        make(a.make)
        return
    if not a.model:
        p.error("give --make DIR or --model DIR")
    bench(a.model, [int(x) for x in a.batch.split(",")], a.prompt_len, a.new_tokens, a.threads)


if __name__ == "__main__":
    main()
