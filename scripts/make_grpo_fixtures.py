#!/usr/bin/env python3
"""Reference GRPO losses and gradient norms for `tests/grpo_parity.rs`.

verl's GRPO objective, written out in torch from verl's formulas (verl/trainer/ppo/core_algos.py:
`compute_grpo_outcome_advantage`, `compute_policy_loss_vanilla`, `kl_penalty(.., "low_var_kl")`,
`agg_loss(.., "token-mean")`; verl/workers/actor/dp_actor.py: `update_policy`), on each tiny
fixture model of `scripts/make_model_fixtures.py` (run that first):

- two prompts with three sampled responses each (fixed ids), rewards 1/0 as a grader gives;
- advantages normalised within each prompt's group (unbiased std, eps 1e-6);
- log-probs and entropies of softmax(logits / temperature) at the response positions;
- old and reference log-probs: the current ones (detached) shifted by fixed per-token offsets,
  so that the ratio is clipped above and below and the dual clip binds, and the KL is nonzero;
- loss = pg_loss - entropy_coeff * entropy + kl_coef * kl, one micro-batch.

Records per family and case the loss, the metrics and the L2 norms of the gradients of
`model.embed_tokens.weight` and `model.layers.0.self_attn.q_proj.weight`.
Writes `tests/fixtures/train/grpo.json`.

Not run by CI. Needs `pip install torch transformers`.
Run from the repository root: `python3 scripts/make_grpo_fixtures.py`.
"""

import json
import os
from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM

FIXTURES = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "train", "grpo.json")
FAMILIES = ["qwen2", "qwen3", "llama", "olmo2"]
WATCHED = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"]
CASES = {
    # the paper's setting (App. B.2): kl 0.001, verl's entropy_coeff 0, temperature 1
    "paper": {"temperature": 1.0, "kl_coef": 0.001, "entropy_coeff": 0.0},
    # everything switched on, so each term's gradient is checked
    "all-terms": {"temperature": 0.7, "kl_coef": 0.1, "entropy_coeff": 0.01},
}
CLIP_LOW, CLIP_HIGH, CLIP_C, EPS = 0.2, 0.2, 3.0, 1e-6


def batch():
    """Six sequences: two prompts, three responses each; a group id and a reward each."""
    seqs = []
    for g, p_len in enumerate([5, 7]):
        prompt = [3 + (g * 41 + j * 13) % 300 for j in range(p_len)]
        for k, (r_len, reward) in enumerate([(6, 1.0), (4, 0.0), (8, float(g))]):
            response = [5 + (g * 29 + k * 17 + j * 7) % 290 for j in range(r_len)]
            seqs.append({"prompt": prompt, "response": response, "group": g, "reward": reward})
    return seqs


def offsets(seqs):
    """Per response token, the shift of the old and reference log-probs from the current ones:
    old = current + d_old makes ratio = exp(-d_old); the pattern covers inside the clip range,
    above (1.35), below (0.61) and past the dual clip's 3 (3.32)."""
    pattern_old = [0.05, -0.3, 0.5, -1.2, 0.0, 0.1, -0.05, 0.3]
    pattern_ref = [0.2, -0.1, 0.0, 0.4, -0.3, 0.15, -0.25, 0.05]
    for i, s in enumerate(seqs):
        n = len(s["response"])
        s["old_offset"] = [pattern_old[(i + j) % len(pattern_old)] for j in range(n)]
        s["ref_offset"] = [pattern_ref[(2 * i + j) % len(pattern_ref)] for j in range(n)]


def advantages(seqs):
    """compute_grpo_outcome_advantage with norm_adv_by_std_in_grpo=True."""
    scores = torch.tensor([s["reward"] for s in seqs])
    by_group = defaultdict(list)
    for i, s in enumerate(seqs):
        by_group[s["group"]].append(scores[i])
    stats = {}
    for g, rs in by_group.items():
        if len(rs) == 1:
            stats[g] = (torch.tensor(0.0), torch.tensor(1.0))
        else:
            t = torch.stack(rs)
            stats[g] = (torch.mean(t), torch.std(t))
    return [((scores[i] - stats[s["group"]][0]) / (stats[s["group"]][1] + EPS)).item() for i, s in enumerate(seqs)]


def masked_mean(x, m):
    return (x * m).sum() / (m.sum() + 1e-8)


def case(model, seqs, adv, settings):
    t = max(len(s["prompt"]) + len(s["response"]) for s in seqs) - 1
    b = len(seqs)
    inputs = torch.zeros(b, t, dtype=torch.long)
    targets = torch.zeros(b, t, dtype=torch.long)
    attn = torch.zeros(b, t, dtype=torch.long)
    mask = torch.zeros(b, t)
    d_old = torch.zeros(b, t)
    d_ref = torch.zeros(b, t)
    a = torch.zeros(b, t)
    for row, s in enumerate(seqs):
        ids = s["prompt"] + s["response"]
        n = len(ids) - 1
        p = len(s["prompt"]) - 1  # the position that predicts the first response token
        r = len(s["response"])
        inputs[row, :n] = torch.tensor(ids[:-1])
        targets[row, :n] = torch.tensor(ids[1:])
        attn[row, :n] = 1
        mask[row, p : p + r] = 1.0
        d_old[row, p : p + r] = torch.tensor(s["old_offset"])
        d_ref[row, p : p + r] = torch.tensor(s["ref_offset"])
        a[row, p : p + r] = adv[row]
    model.zero_grad()
    logits = model(input_ids=inputs, attention_mask=attn).logits.float() / settings["temperature"]
    logp_all = torch.log_softmax(logits, -1)
    log_prob = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(torch.softmax(logits, -1) * logp_all).sum(-1)
    old = log_prob.detach() + d_old
    ref = log_prob.detach() + d_ref

    # compute_policy_loss_vanilla
    neg_kl = torch.clamp(log_prob - old, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    ppo_kl = masked_mean(-neg_kl, mask)
    pg1 = -a * ratio
    pg2 = -a * torch.clamp(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH)
    clip1 = torch.maximum(pg1, pg2)
    clipfrac = masked_mean(torch.gt(pg2, pg1).float(), mask)
    pg3 = -a * CLIP_C
    clip2 = torch.min(pg3, clip1)
    clipfrac_lower = masked_mean(torch.gt(clip1, pg3) * (a < 0).float(), mask)
    pg = torch.where(a < 0, clip2, clip1)
    pg_loss = masked_mean(pg, mask)

    # kl_penalty(.., "low_var_kl")
    k = torch.clamp(ref - log_prob, min=-20, max=20)
    kld = torch.clamp(torch.exp(k) - k - 1, min=-10, max=10)
    kl = masked_mean(kld, mask)
    ent = masked_mean(entropy, mask)

    loss = pg_loss + kl * settings["kl_coef"]
    if settings["entropy_coeff"] != 0:
        loss = loss - ent * settings["entropy_coeff"]
    loss.backward()
    params = dict(model.named_parameters())
    return {
        "loss": loss.item(),
        "pg_loss": pg_loss.item(),
        "clip_fraction": clipfrac.item(),
        "clip_fraction_lower": clipfrac_lower.item(),
        "ppo_kl": ppo_kl.item(),
        "kl": kl.item(),
        "entropy": ent.item(),
        "grad_norms": {name: params[name].grad.norm().item() for name in WATCHED},
    }


def main():
    torch.manual_seed(0)
    seqs = batch()
    offsets(seqs)
    adv = advantages(seqs)
    out = {"sequences": seqs, "advantages": adv, "cases": CASES, "families": {}}
    for family in FAMILIES:
        model = AutoModelForCausalLM.from_pretrained(
            os.path.join(FIXTURES, family), dtype=torch.float32, attn_implementation="eager"
        )
        model.train(False)
        out["families"][family] = {name: case(model, seqs, adv, s) for name, s in CASES.items()}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
