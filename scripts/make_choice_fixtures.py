#!/usr/bin/env python3
"""Build the multiple-choice grading fixture from the Qwen2.5-Math reference harness.

Usage:
    python scripts/make_choice_fixtures.py QWEN_EVAL_DIR OUT_JSONL [--seed S] [--random N]

QWEN_EVAL_DIR is a checkout of Qwen2.5-Math's `evaluation/` folder (not vendored here); its
`parser.py`, `grader.py` and `latex2sympy/` are imported from that path (the same packages as
`scripts/grader_reference.py`: `sympy`, `antlr4-python3-runtime==4.11.1`, `word2number`,
`regex`, `numpy`).

The harness grades its multiple-choice benchmarks (`mmlu_stem`, `sat_math`, `aqua`) through
`extract_answer(pred, data_name)`, whose "choice answer" step keeps the last standalone
letter A-E of the extracted piece, then `strip_string` (as `run_execute` does) and
`math_equal(pred, gt)`, whose second rule compares `choice_answer_clean(pred)` with a letter
gold answer. cft grades MedQA that way. The cases are derived from that source:
  * `clean`: strings for `choice_answer_clean` itself, among them the harness's own example
    (`_test_extract_answer`), each of its steps (the stripped characters, the trigger-less
    letter search on the upper-cased text, the fallback `strip().strip(".")`), and letters
    inside words, lower case, several letters, no letter;
  * `grade`: responses ending in each form `extract_answer` looks for (Minerva's "final answer
    is $...$. I hope", the last `boxed`, "he answer is", "final answer is", "答案是", the last
    number) with a letter, a letter and its option text, a lower-case letter, two letters, no
    letter, against each gold letter;
  * `random`: seeded random responses assembled from those pieces.
Each line is `{"kind": "clean", "input", "output"}` or
`{"kind": "grade", "response", "gold", "pred", "correct"}`.

The committed fixture was made with:
    python scripts/make_choice_fixtures.py /tmp/qwen-eval/evaluation \
        tests/fixtures/grader/choice.jsonl --seed 0 --random 400
"""

import argparse
import json
import os
import random
import sys


def harness(path):
    sys.path.insert(0, os.path.join(path, "latex2sympy"))
    sys.path.insert(0, path)
    from parser import extract_answer, strip_string  # noqa: E402
    from grader import choice_answer_clean, math_equal  # noqa: E402

    def grade(response, gold):
        # run_execute: extract_answer, then strip_string again
        pred = strip_string(extract_answer(response, "mmlu_stem"), skip_unit=False)
        return pred, bool(math_equal(pred, gold, timeout=False))

    return choice_answer_clean, grade


CLEAN = [
    "\\mathrm{(D)\\}1,008,016",  # the harness's own example
    "(B)",
    "B",
    "B.",
    "B/",
    "B./",
    "\nC\n",
    ":D",
    ": D.",
    "  E  ",
    "A or C.",
    "a",
    "c.",
    "ABC",
    "D1",
    "(F)",
    "",
    " . ",
    "...",
    "the answer is b",
    "Option (E) is right",
    "I'd pick (A), not (B)",
    "A. 12",
    "(C) 14",
    "\\text{(A)}",
    "\\textbf{E}",
    "A-B",
    "B_1",
    "x = D",
    "None of these",
    "14",
    "\u00e9 (B)",
    "\u00df",
    "\x1fB\x1f",
]

# Endings of a response, `{x}` the letter text it names.
FORMS = [
    "So the correct option is \\boxed{{{x}}}.",
    "Therefore \\boxed{{{x}}}",
    "\\boxed{{\\text{{{x}}}}}",
    "\\boxed {x}$ done",
    "The answer is {x}.",
    "The answer is: {x}",
    "So the answer is 14, which is {x}.",
    "Hence the final answer is {x}",
    "Final Answer: The final answer is ${x}$. I hope it is correct.",
    "答案是 {x}\n\n其他",
    "I choose {x}",
    "{x}",
    "\\boxed{{{x}}}. But the answer is (A).",
]

LETTER_TEXTS = [
    "{L}",
    "({L})",
    "({L}) 14",
    "{l}",
    "({l})",
    "{L} or {M}",
    "option {L}",
    "{L}.",
    "{L}{M}",
    "14",
    "none",
    "",
]

LETTERS = "ABCDE"


def letter_text(template, letter, other):
    return template.format(L=letter, M=other, l=letter.lower())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("qwen_eval_dir")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random", type=int, default=400)
    args = ap.parse_args()
    clean, grade = harness(args.qwen_eval_dir)
    rng = random.Random(args.seed)
    lines = []
    for s in CLEAN:
        lines.append({"kind": "clean", "input": s, "output": clean(s)})
    preamble = "Let's think step by step.\nThe patient has 3 signs, so 2 + 1 = 3.\n"
    for form in FORMS:
        for lt in LETTER_TEXTS:
            letter, other = rng.choice(LETTERS), rng.choice(LETTERS)
            x = letter_text(lt, letter, other)
            response = preamble + form.format(x=x)
            for gold in sorted({letter, other, rng.choice(LETTERS)}):
                pred, correct = grade(response, gold)
                lines.append(
                    {"kind": "grade", "response": response, "gold": gold,
                     "pred": pred, "correct": correct}
                )
    pieces = ["The answer is ", "\\boxed{", "}", "(", ")", " ", "\n", ".", ":", "$",
              "final answer is ", "14", "7", ", which is ", "option ", "答案是"]
    pieces += list(LETTERS) + ["a", "c", "e"]
    for _ in range(args.random):
        n = rng.randint(1, 10)
        response = "".join(rng.choice(pieces) for _ in range(n))
        gold = rng.choice(LETTERS)
        pred, correct = grade(response, gold)
        lines.append(
            {"kind": "grade", "response": response, "gold": gold,
             "pred": pred, "correct": correct}
        )
        lines.append({"kind": "clean", "input": response, "output": clean(response)})
    with open(args.out, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    graded = [x for x in lines if x["kind"] == "grade"]
    print(f"{len(lines)} cases, {len(graded)} graded, "
          f"{sum(x['correct'] for x in graded)} correct")


if __name__ == "__main__":
    main()
