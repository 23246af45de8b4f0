#!/usr/bin/env python3
"""Batched greedy decoding throughput with transformers, to compare with `cft bench generate`.

    python3 scripts/bench_transformers.py --make /tmp/bench-model   # a random ~3.7M-parameter Qwen2
    cft bench generate --model /tmp/bench-model --batch 1,8,64       # (release build)
    python3 scripts/bench_transformers.py --model /tmp/bench-model --batch 1,8,64

Same measurement as the Rust side: `--batch` prompts of `--prompt-len` pseudo-random ids,
`--new-tokens` greedy steps with EOS ignored, one untimed warm-up, time includes prefill.
Runs `model.generate` (eager attention, f32, its default dynamic KV cache) on `--device`
(cpu, or cuda[:N] as `cft bench generate --device`).

`--make DIR --shape qwen2.5-0.5b` writes a random model of Qwen2.5-0.5B's shape instead (hidden
896, 24 layers, 14 heads / 2 KV heads, intermediate 4864, vocab 151936, tied embeddings; ~494M
parameters, 2 GB in f32), as `scripts/gpu-check.sh` does on a GPU machine; `--shape 135m` a
Llama layout of ~135M parameters (hidden 576, 30 layers, 9 heads / 3 KV heads, intermediate
1536, vocab 49152, tied embeddings), issue 19's CPU decoding shape. `cft check make-model DIR
--shape S` writes the same shapes without Python.
Not run by CI. Needs `pip install torch transformers safetensors tokenizers`.
"""

import argparse
import os
import shutil
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

FIXTURE_TOKENIZER = os.path.join("tests", "fixtures", "models", "qwen2")


# name -> (vocab, hidden, intermediate, layers, heads, kv heads, initializer_range, layout);
# the same shapes as `cft check make-model --shape`.
SHAPES = {
    "tiny": (2048, 256, 768, 4, 8, 4, 0.1, "qwen2"),
    "qwen2.5-0.5b": (151936, 896, 4864, 24, 14, 2, 0.02, "qwen2"),
    "135m": (49152, 576, 1536, 30, 9, 3, 0.02, "llama"),
}


def make(directory, shape):
    torch.manual_seed(0)
    vocab, hidden, intermediate, layers, heads, kv, init, layout = SHAPES[shape]
    config_class, model_class = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
    }[layout]
    config = config_class(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=init,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
    )
    model = model_class(config).float()
    model.save_pretrained(directory)
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(os.path.join(FIXTURE_TOKENIZER, name), directory)
    print(f"wrote {directory}: {sum(p.numel() for p in model.parameters())} parameters")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(directory, batches, prompt_len, new_tokens, threads, device):
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    model.to(device).eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"transformers {torch.__version__} on {device} ({where}), prompt {prompt_len}, {new_tokens} new tokens")
    for b in batches:
        ids = torch.randint(0, vocab, (b, prompt_len), generator=g).to(device)
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
        synchronize(device)
        start = time.perf_counter()
        out = run(new_tokens)
        synchronize(device)
        seconds = time.perf_counter() - start
        tokens = (out.shape[1] - prompt_len) * b
        print(f"batch {b:>3}: {tokens:>6} tokens in {seconds:>7.3f} s = {tokens / seconds:>9.1f} tokens/s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make", metavar="DIR", help="write the random benchmark model here and exit")
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="the model --make writes")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--model", metavar="DIR")
    p.add_argument("--batch", default="1,8,64")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    if a.make:
        make(a.make, a.shape)
        return
    if not a.model:
        p.error("give --make DIR or --model DIR")
    bench(a.model, [int(x) for x in a.batch.split(",")], a.prompt_len, a.new_tokens, a.threads, a.device)


if __name__ == "__main__":
    main()
