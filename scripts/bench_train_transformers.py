#!/usr/bin/env python3
"""The training step of `cft bench train`, timed with transformers on the same machine.

Same work per step: a batch of random token ids (seed 0), SFT loss over every position,
backward, global-norm clipping at 1.0, AdamW (torch defaults), f32, eager attention, on
`--device` (cpu, or cuda[:N] as `cft bench train --device`). One untimed warm-up step, then `--steps` timed steps; prints training tokens/s.

`--make-model DIR` first writes a random Llama of a few million parameters (hidden 256,
4 layers, 4 heads, intermediate 768, vocab 8192, tied embeddings) with a tokenizer copied
from a test fixture, so both tools can load it:

    python3 scripts/bench_train_transformers.py --make-model /tmp/bench-llama
    cargo run --release -- bench train --model /tmp/bench-llama --batch 8 --seq-len 128
    python3 scripts/bench_train_transformers.py --model /tmp/bench-llama --batch 8 --seq-len 128

Needs `pip install torch transformers`. Set `--threads` to the core count used by cft.
"""

import argparse
import os
import shutil
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


def make_model(path):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    fixture = os.path.join("tests", "fixtures", "models", "llama")
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(fixture, name), os.path.join(path, name))
    print(f"wrote {path}: {sum(p.numel() for p in model.parameters())} parameters")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--make-model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    if args.make_model:
        make_model(args.make_model)
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager"
    )
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len + 1), generator=g)
    ids = ids.to(device)
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def step():
        logits = model(input_ids=inputs).logits.float()
        logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        loss = -logp.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up
    synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    seconds = time.perf_counter() - start
    tokens = args.steps * args.batch * (args.seq_len + 1)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"transformers {torch.__version__}, {params} parameters, batch {args.batch} x "
        f"{args.seq_len + 1} tokens, {args.device}, {args.threads} threads: {tokens / seconds:.1f} training "
        f"tokens/s ({seconds * 1000 / args.steps:.1f} ms/step)"
    )


if __name__ == "__main__":
    main()
