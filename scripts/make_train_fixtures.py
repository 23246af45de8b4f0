#!/usr/bin/env python3
"""Reference losses and gradient norms for `tests/train_parity.rs`.

For each tiny fixture of `scripts/make_model_fixtures.py` (run that first), a batch of two
right-padded sequences with per-position weights (0 on prompt and padding, 0/1/2 on the
response, as Graded CFT gives) is run through transformers in f32 on the CPU; for each
objective (SFT Eq. 1, weighted Eq. 8, DFT) the script records the loss and the L2 norms of
the gradients of `model.embed_tokens.weight` and `model.layers.0.self_attn.q_proj.weight`.
Writes `tests/fixtures/train/parity.json`.

The same for a LoRA-wrapped model (peft; r=4, alpha=8 on q_proj, v_proj and up_proj, B drawn
at random rather than zero so that every adapter matrix has a gradient): the adapter is saved
in PEFT's format under `tests/fixtures/train/lora-<family>/`, and the loss and gradient norms
of layer 0's q_proj `lora_A` and `lora_B` are recorded under `lora`.

Not run by CI. Needs `pip install torch transformers peft`.
Run from the repository root: `python3 scripts/make_train_fixtures.py`.
"""

import json
import os

import torch
from transformers import AutoModelForCausalLM

FIXTURES = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "train")
FAMILIES = ["qwen2", "qwen3", "llama", "olmo2"]
WATCHED = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"]


def batch():
    """Two sequences: ids, prompt length and Graded weights (one per response token)."""
    seqs = []
    for i, (p_len, r_len) in enumerate([(6, 9), (4, 5)]):
        ids = [3 + (i * 37 + j * 11) % 300 for j in range(p_len + r_len)]
        graded = [float((i + j) % 3) for j in range(r_len)]
        seqs.append({"ids": ids, "prompt_len": p_len, "graded": graded})
    return seqs


def position_weights(seq, objective):
    """Weight of predicting ids[t+1] at position t: 0 on the prompt; the Graded weight
    (weighted) or 1 (SFT, DFT) on each response token."""
    response = seq["graded"] if objective == "weighted" else [1.0] * len(seq["graded"])
    return [0.0] * (seq["prompt_len"] - 1) + response


def loss_and_grads(model, seqs, objective, watched=WATCHED):
    t = max(len(s["ids"]) for s in seqs) - 1
    inputs = torch.zeros(len(seqs), t, dtype=torch.long)
    targets = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    w = torch.zeros(len(seqs), t)
    for row, s in enumerate(seqs):
        n = len(s["ids"]) - 1
        inputs[row, :n] = torch.tensor(s["ids"][:-1])
        targets[row, :n] = torch.tensor(s["ids"][1:])
        mask[row, :n] = 1
        w[row, :n] = torch.tensor(position_weights(s, objective))
    model.zero_grad()
    logits = model(input_ids=inputs, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # Eq. 1 / Eq. 8: divide by the weight sum; DFT scales by the stopped probability.
    scale = w * logp.detach().exp() if objective == "dft" else w
    loss = -(scale * logp).sum() / w.sum()
    loss.backward()
    params = dict(model.named_parameters())
    norms = {name: params[name].grad.norm().item() for name in watched}
    return loss.item(), norms


def lora_case(family, seqs):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(
        os.path.join(FIXTURES, family), dtype=torch.float32, attn_implementation="eager"
    )
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "up_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    model.train()
    model.save_pretrained(os.path.join(OUT, f"lora-{family}"))
    os.remove(os.path.join(OUT, f"lora-{family}", "README.md"))  # peft's model card
    loss, _ = loss_and_grads(model, seqs, "weighted", watched=[])
    params = dict(model.named_parameters())
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    norms = {
        "model.layers.0.self_attn.q_proj.lora.a": params[f"{prefix}.lora_A.default.weight"].grad.norm().item(),
        "model.layers.0.self_attn.q_proj.lora.b": params[f"{prefix}.lora_B.default.weight"].grad.norm().item(),
    }
    frozen = params["base_model.model.model.embed_tokens.weight"].grad
    assert frozen is None
    return {"weighted": {"loss": loss, "grad_norms": norms}}


def main():
    seqs = batch()
    out = {"sequences": seqs, "families": {}}
    for family in FAMILIES:
        model = AutoModelForCausalLM.from_pretrained(
            os.path.join(FIXTURES, family), dtype=torch.float32, attn_implementation="eager"
        )
        model.train()
        cases = {}
        for objective in ["sft", "weighted", "dft"]:
            loss, norms = loss_and_grads(model, seqs, objective)
            cases[objective] = {"loss": loss, "grad_norms": norms}
        out["families"][family] = cases
        out.setdefault("lora", {})[family] = lora_case(family, seqs)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "parity.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
