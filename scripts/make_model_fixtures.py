#!/usr/bin/env python3
"""Tiny random HF models and reference outputs for `tests/model_parity.rs`.

Writes `tests/fixtures/models/<family>/` for the four decoder families that `cft` loads
(Qwen2.5, Qwen3, Llama 3.x, OLMo2), each an HF directory as a user would download it
(config.json, safetensors weights, tokenizer.json, tokenizer_config.json), plus
`reference.safetensors` (logits at every position, eager attention, f32, CPU) and
`reference.json` (prompts, greedy continuations single and left-padded batched, per-step
log-probs, score statistics, tokenizer and chat-template cases).

The configs carry each family's quirks so that a skipped norm, bias or rope band shows:
GQA (4 query heads, 2 key/value heads), Qwen3's head_dim that is not hidden/heads,
Llama 3 rope scaling with original_max_position_embeddings=32 (all three frequency bands
occur with head_dim 16), norm weights and biases drawn away from their identity values.
Also written: `qwen2-bf16` (the Qwen2 weights rounded to bf16 and stored as bf16) and
`olmo2` sharded into several files with `model.safetensors.index.json`.

Not run by CI. Needs `pip install torch transformers safetensors tokenizers`.
Run from the repository root: `python3 scripts/make_model_fixtures.py`.
"""

import copy
import json
import math
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

OUT = os.path.join("tests", "fixtures", "models")
VOCAB = 320  # model vocab; the tokenizer uses fewer ids, as real checkpoints do
GREEDY_STEPS = 24
TOP_K = 5

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "The answer is 72. So the final answer is 72.",
    "Let's think step by step. 48 / 2 = 24 and 48 + 24 = 72.",
    "Question: A robe takes 2 bolts of blue fiber and half that much white fiber.",
    "Answer: 2 + 1 = 3 bolts in total. #### 3",
] * 4

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Token-id prompts, so that model parity does not depend on the tokenizer.
PROMPTS = [
    [5, 17, 42, 99, 3],
    [260, 7, 7, 150, 33, 12, 281, 90, 4],
    [11, 200, 64, 18, 300, 2, 77, 141, 9, 250, 31, 8, 119],
]


def build_tokenizer(directory):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(directory)
    return fast


def perturb(model, seed):
    """Moves norm weights off 1 and biases off 0 so that skipping either shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def forward_logits(model, ids, mask=None, positions=None):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions)
    return out.logits.float()


def greedy_single(model, prompt):
    ids = torch.tensor([prompt])
    tokens, logprobs, tops = [], [], []
    for _ in range(GREEDY_STEPS):
        logits = forward_logits(model, ids)[0, -1]
        lp = torch.log_softmax(logits, -1)
        nxt = int(torch.argmax(logits))
        tokens.append(nxt)
        logprobs.append(float(lp[nxt]))
        tops.append([int(i) for i in torch.topk(lp, TOP_K).indices])
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return tokens, logprobs, tops


def greedy_batch(model, prompts, pad_id):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = [[] for _ in prompts]
    for _ in range(GREEDY_STEPS):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = forward_logits(model, ids, mask, positions)[:, -1]
        nxt = torch.argmax(logits, -1)
        for row, t in enumerate(nxt.tolist()):
            out[row].append(t)
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=mask.dtype)], 1)
    return out


def score(logits, prompt):
    lp = torch.log_softmax(logits, -1)
    rows = []
    for p in range(len(prompt)):
        nxt = float(lp[p, prompt[p + 1]]) if p + 1 < len(prompt) else None
        entropy = float(-(lp[p].exp() * lp[p]).sum())
        top = torch.topk(lp[p], TOP_K)
        rows.append(
            {
                "pos": p,
                "token": prompt[p],
                "next_logprob": nxt,
                "entropy": entropy,
                "top": [[int(i), float(v.exp())] for i, v in zip(top.indices, top.values)],
            }
        )
    return rows


def write_reference(model, directory, tokenizer, pad_id):
    tensors = {}
    for i, prompt in enumerate(PROMPTS):
        tensors[f"logits.{i}"] = forward_logits(model, torch.tensor([prompt]))[0].contiguous()
    save_file(tensors, os.path.join(directory, "reference.safetensors"))
    single = [greedy_single(model, p) for p in PROMPTS]
    ref = {
        "prompts": PROMPTS,
        "pad_id": pad_id,
        "greedy_single": [s[0] for s in single],
        "greedy_single_logprobs": [s[1] for s in single],
        "greedy_single_top": [s[2] for s in single],
        "greedy_batch": greedy_batch(model, PROMPTS, pad_id),
        "score": [score(tensors[f"logits.{i}"], p) for i, p in enumerate(PROMPTS)],
    }
    if tokenizer is not None:
        texts = ["How many clips did Natalia sell?", "48 / 2 = 24 #### 24", "héllo wörld<|im_end|>"]
        ref["tokenizer"] = [{"text": t, "ids": tokenizer.encode(t, add_special_tokens=True)} for t in texts]
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "  What is 2 + 3?  "},
        ]
        ref["chat"] = {
            "messages": messages,
            "rendered": tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
        }
    with open(os.path.join(directory, "reference.json"), "w") as f:
        json.dump(ref, f)


def families():
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    yield "qwen2", Qwen2ForCausalLM(
        Qwen2Config(**common, rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=10000.0)
    )
    yield "qwen3", Qwen3ForCausalLM(
        Qwen3Config(**common, head_dim=24, rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=1e6)
    )
    llama_rope = dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=32,
        rope_theta=10000.0,
    )
    yield "llama", LlamaForCausalLM(
        LlamaConfig(**common, rms_norm_eps=1e-5, tie_word_embeddings=False, rope_parameters=llama_rope)
    )
    yield "olmo2", Olmo2ForCausalLM(
        Olmo2Config(**common, rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=500000.0)
    )


def to_transformers4_config(directory):
    """Rewrites config.json the way transformers 4.x saved it (rope_theta at top level)."""
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rope = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rope.get("rope_theta", 10000.0)
    cfg["rope_scaling"] = None
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tmp)
        pad_id = tokenizer.pad_token_id
        for seed, (family, model) in enumerate(families()):
            torch.manual_seed(seed)
            model.apply(model._init_weights)
            perturb(model, seed)
            model = model.float().eval()
            model.config._attn_implementation = "eager"
            directory = os.path.join(OUT, family)
            shutil.rmtree(directory, ignore_errors=True)
            shard = "200KB" if family == "olmo2" else "100MB"
            model.save_pretrained(directory, max_shard_size=shard)
            if family == "qwen2":
                to_transformers4_config(directory)
            tokenizer.save_pretrained(directory)
            write_reference(model, directory, tokenizer, pad_id)
            if family == "qwen2":
                # bf16 on disk; the reference is the same model with bf16-rounded weights in f32.
                bf16_dir = os.path.join(OUT, "qwen2-bf16")
                shutil.rmtree(bf16_dir, ignore_errors=True)
                copy.deepcopy(model).to(torch.bfloat16).save_pretrained(bf16_dir)
                tokenizer.save_pretrained(bf16_dir)
                # Round the parameters only: `.to(bf16)` would also round the rope buffer.
                with torch.no_grad():
                    for p in model.parameters():
                        p.copy_(p.to(torch.bfloat16).float())
                write_reference(model, bf16_dir, None, pad_id)
            print(family, sum(p.numel() for p in model.parameters()), "parameters")


if __name__ == "__main__":
    main()
