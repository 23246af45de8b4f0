#!/usr/bin/env python3
"""Build the grader agreement fixtures from the Qwen2.5-Math reference harness.

Usage:
    python scripts/grader_reference.py QWEN_EVAL_DIR DATA_DIR OUT_JSONL \
        [--per-bench N] [--seed S] [--golds DIGESTS_JSONL] [--golds-full ALL_GOLDS_JSONL]

QWEN_EVAL_DIR is a checkout of Qwen2.5-Math's `evaluation/` folder (not vendored here);
its `parser.py`, `grader.py` and `latex2sympy/` are imported from that path. It needs
`sympy==1.12`, `antlr4-python3-runtime==4.11.1`, `word2number`, `regex` and `numpy`.
DATA_DIR is the folder of benchmark files (see shared/data/README.md).

For every benchmark the script draws problems, takes their gold answer exactly as the
harness does (`parse_ground_truth`) and writes responses around it in three sections:
  * realistic: worked solutions ending in `\boxed{}` or "The answer is", Minerva's "final
    answer is $...$. I hope", equivalent rewritings (decimals, fractions, percentages,
    units, reordered tuples, intervals, matrices), perturbed wrong answers and
    last-number-only endings;
  * stress: formatting noise (`x = a`, units, `\$`, `\%`, degrees, `\text{}`), rewrites made
    by sympy (expand, factor, simplify, numeric approximations) and other problems' answers;
  * hand-written: HANDWRITTEN, cases aimed at the reference's quirks.
The harness then gives `pred` (extract_answer + strip_string, as in `run_execute`) and
`correct` (`math_equal(pred, gt)`, three-second limit as in `evaluate.py`). Each output line
is `{"benchmark", "response", "answer", "pred", "correct"}` where `answer` is the parsed gold.

With --golds, it also writes per-benchmark FNV-1a digests of every gold answer and question
(`tests/fixtures/grader/gold_digests.jsonl`), which the loaders' real-data test checks.

The committed fixture was made with:
    python scripts/grader_reference.py /tmp/qwen-eval/evaluation ../shared/data \
        tests/fixtures/grader/reference.jsonl --per-bench 40 --seed 0 \
        --golds tests/fixtures/grader/gold_digests.jsonl
"""

import argparse
import json
import os
import random
import re
import signal
import sys


def load(data_dir, name):
    if name == "tabmwp":
        path = os.path.join(data_dir, "tabmwp", "problems_test1k.json")
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        return [dict(idx=i, **v) for i, (k, v) in enumerate(table.items())]
    path = os.path.join(data_dir, name, "test.jsonl")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [dict(r, idx=r.get("idx", i)) for i, r in enumerate(rows)]


BENCHMARKS = [
    "gsm8k", "math", "svamp", "asdiv", "mawps", "carp_en", "tabmwp",
    "minerva_math", "gaokao2023en", "olympiadbench", "college_math",
]


class Timeout(Exception):  # raised by SIGALRM
    pass


def _alarm(signum, frame):
    raise Timeout()


def raw_gold(ex, name, P):
    """A human-written form of the gold answer, before the harness normalises it."""
    if name in ("math", "minerva_math"):
        return P.find_box(ex["solution"])
    if name == "gsm8k":
        return ex["answer"].split("####")[-1].strip()
    if name == "svamp":
        return str(ex["Answer"])
    if name == "asdiv":
        return re.sub(r"\(.*?\)", "", ex["answer"]).strip()
    if name == "mawps":
        return str(ex["target"])
    if name == "olympiadbench":
        return ex["final_answer"][0].strip("$")
    if name in ("gaokao2023en", "college_math"):
        return ex["answer"].replace("$", "").strip()
    return str(ex["answer"])


def worked_solution(ex, name):
    if name == "gsm8k":
        return re.sub(r"<<.*?>>", "", ex["answer"].split("####")[0]).strip()
    if name in ("math", "minerva_math"):
        return ex["solution"]
    if name == "tabmwp":
        return ex.get("solution") or ""
    if name == "carp_en":
        return ex.get("steps") or ""
    if name == "svamp":
        return "We compute " + ex["Equation"].strip() + "."
    if name == "asdiv":
        return "We compute " + ex["formula"].strip() + "."
    if name == "olympiadbench":
        sol = ex.get("solution") or [""]
        return sol[0][:1500]
    return "Let us solve the problem step by step."


NUM = re.compile(r"-?\d+(?:\.\d+)?")


def perturb(ans, rng):
    """A wrong answer that looks like the right one."""
    nums = list(NUM.finditer(ans))
    if nums:
        m = rng.choice(nums)
        val = m.group(0)
        choice = rng.random()
        if "." in val:
            new = str(round(float(val) * rng.choice([2, 0.5, 1.1]) + 1, 3))
        elif choice < 0.5:
            new = str(int(val) + rng.choice([1, -1, 2, 10]))
        else:
            new = str(int(val) * 2 + 1)
        return ans[: m.start()] + new + ans[m.end():]
    if re.search(r"[a-z]", ans):
        return ans.replace("x", "y", 1) if "x" in ans else ans + "+1"
    return ans + "1"


def equivalents(ans, rng):
    """Differently written forms a model might give for the same answer."""
    out = []
    a = ans.strip()
    try:
        v = float(a.replace(",", ""))
        if v.is_integer():
            iv = int(v)
            out += [f"{iv}.0", f"{iv:,}", f"\\${iv}", f"{iv}\\%", f"{iv} \\text{{ dollars}}",
                    f"{iv}\\text{{ cm}}", f"{iv}^\\circ", f"x = {iv}", f"{iv*2}/2",
                    f"\\frac{{{iv*3}}}{{3}}", f"{iv/100}", f"{iv} apples", f"{iv} meters"]
        else:
            out += [f"{v:.2f}", f"{v*100:g}\\%", f"{v:.6f}", f"{v:.1f}"]
            for den in (2, 3, 4, 5, 6, 8, 10, 12, 20, 25, 100):
                num = v * den
                if abs(num - round(num)) < 1e-9:
                    out.append(f"\\frac{{{int(round(num))}}}{{{den}}}")
                    out.append(f"{int(round(num))}/{den}")
                    break
        return out
    except ValueError:
        pass
    m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", a)
    if m:
        p, q = int(m.group(1)), int(m.group(2))
        out += [f"{p}/{q}", f"{p/q:.4f}", f"{p/q:.2f}", f"\\dfrac{{{p}}}{{{q}}}",
                f"\\frac{{{2*p}}}{{{2*q}}}", f"{p/q:.6f}", f"\\frac{p}{q}" if p < 10 and q < 10 else f"{p}/{q}"]
        return out
    if a.startswith("(") and a.endswith(")") and "," in a:
        parts = [s.strip() for s in a[1:-1].split(",")]
        out += ["(" + ", ".join(parts) + ")", "[" + ",".join(parts) + "]",
                "(" + ",".join(reversed(parts)) + ")", "(" + ",".join(parts) + "]",
                "\\left(" + ",".join(parts) + "\\right)"]
        return out
    if "pmatrix" in a:
        out += [a.replace("pmatrix", "bmatrix"), a.replace(" ", ""),
                a.replace("\\frac", "\\dfrac")]
        return out
    if "+" in a and "=" not in a and "," not in a and "(" not in a:
        parts = a.split("+")
        if len(parts) == 2 and parts[0].strip() and parts[1].strip():
            out.append(parts[1].strip() + "+" + parts[0].strip())
    if "\\frac" in a:
        out.append(a.replace("\\frac", "\\dfrac"))
        m2 = re.search(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", a)
        if m2:
            out.append(a.replace(m2.group(0), f"({m2.group(1)})/({m2.group(2)})"))
    if "\\sqrt{" in a:
        out.append(re.sub(r"\\sqrt\{(\w)\}", r"\\sqrt\1", a))
    if "=" not in a and re.search(r"[a-z]", a):
        out.append("y = " + a)
    out.append(a.replace(" ", ""))
    out.append("\\text{" + a + "}" if re.fullmatch(r"[A-Za-z ]+", a) else "$" + a + "$")
    return out


def responses(ex, name, gold_raw, rng):
    sol = worked_solution(ex, name)
    sol = re.sub(r"\\boxed", "", sol) if name not in ("math", "minerva_math") else sol
    short = sol[-250:]
    forms = [gold_raw] + equivalents(gold_raw, rng)
    wrong = perturb(gold_raw, rng)
    out = []
    if name in ("math", "minerva_math") and len(sol) < 700:
        out.append(sol)
    out.append(f"{short}\n\nTherefore, the final answer is $\\boxed{{{gold_raw}}}$.")
    out.append(f"{short}\nThe answer is {gold_raw}.")
    out.append(f"Final Answer: The final answer is ${gold_raw}$. I hope it is correct.")
    for f in rng.sample(forms[1:], min(3, len(forms) - 1)):
        style = rng.random()
        if style < 0.6:
            out.append(f"{short}\n\nSo the answer is \\boxed{{{f}}}.")
        elif style < 0.85:
            out.append(f"Step by step: {short[:120]}\nThe answer is {f}")
        else:
            out.append(f"Final Answer: The final answer is ${f}$. I hope it is correct.")
    out.append(f"{short}\n\nThus the answer is $\\boxed{{{wrong}}}$.")
    out.append(f"{short}\nThe answer is {wrong}.")
    nums = NUM.findall(gold_raw)
    if nums:
        out.append(f"We get {rng.randint(1, 99)} and then {nums[-1]} in total")
    return out


def gold_example(name, raw):
    """A minimal record of benchmark `name` whose gold answer is written `raw`."""
    if name in ("math", "minerva_math"):
        return {"solution": f"So the answer is $\\boxed{{{raw}}}$."}
    if name == "olympiadbench":
        return {"final_answer": [f"${raw}$"]}
    if name == "gsm8k":
        return {"answer": f"work\n#### {raw}"}
    if name == "tabmwp":
        return {"answer": raw, "ans_type": "extractive_text", "solution": ""}
    if name == "carp_en":
        return {"answer": raw, "steps": ""}
    return {"answer": raw}


def grade_reference(P, G, resp, name, gt):
    """pred as run_execute makes it, and math_equal(pred, gt) under evaluate.py's 3 s limit."""
    pred = ""
    signal.alarm(3)
    try:
        pred = P.extract_answer(resp, name)
        pred = P.strip_string(pred, skip_unit=name in P.STRIP_EXCEPTIONS)
        signal.alarm(3)
        correct = bool(G.math_equal(pred, gt))
    except Exception:  # Timeout included: a timed-out comparison counts as wrong
        correct = False
    finally:
        signal.alarm(0)
    return pred, correct


def fnv1a(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def write_golds(args, P):
    """Digest of every gold answer and question, as parse_ground_truth / parse_question give them."""
    full = open(args.golds_full, "w", encoding="utf-8") if args.golds_full else None
    with open(args.golds, "w", encoding="utf-8") as out:
        for name in BENCHMARKS:
            rows = load(args.data_dir, name)
            golds, questions = [], []
            for ex in rows:
                _, gt = P.parse_ground_truth(dict(ex), name)
                golds.append(str(gt))
                questions.append(P.parse_question(dict(ex), name))
                if full:
                    full.write(json.dumps(dict(benchmark=name, idx=len(golds) - 1, gold=str(gt)), ensure_ascii=False) + "\n")
            row = dict(benchmark=name, n=len(golds), gold_fnv=fnv1a("\n".join(golds)),
                       question_fnv=fnv1a("\n".join(questions)))
            out.write(json.dumps(row) + "\n")


def sympy_forms(gold, rng):
    """Equivalent (and near-equivalent) rewrites of a LaTeX gold answer, made by sympy."""
    import sympy
    from sympy.parsing.latex import parse_latex
    out = []
    try:
        signal.alarm(2)
        e = parse_latex(gold)
        if isinstance(e, sympy.Expr) and e.free_symbols:
            for f in (sympy.expand, sympy.factor, sympy.simplify, sympy.together):
                out.append(sympy.latex(f(e)))
        elif isinstance(e, sympy.Expr):
            v = complex(sympy.N(e))
            if v.imag == 0 and abs(v.real) < 1e12:
                x = v.real
                out += [f"{x:.6g}", f"{x:.4g}", f"{x:.3g}", f"{x:.8f}", sympy.latex(sympy.nsimplify(e))]
            out.append(sympy.latex(sympy.simplify(e)))
    except Exception:
        pass
    finally:
        signal.alarm(0)
    return [o for o in out if o and o != gold][:4]


FORMATS = [
    "\\boxed{{x = {a}}}", "\\boxed{{{a} \\text{{ cm}}}}", "\\boxed{{\\${a}}}", "\\boxed{{{a}\\%}}",
    "\\boxed{{{a}^\\circ}}", "\\boxed{{\\text{{{a}}}}}", "$\\boxed{{{a}}}$ dollars", "\\boxed{{ {a} }}.",
    "\\boxed{{\\mathbf{{{a}}}}}", "\\boxed{{{a}}} \\text{{ units}}", "The answer is ${a}$.", "The answer is: {a} apples",
    "\\[ \\boxed{{{a}}} \\]", "answer: {a}",
]


# Hand-written (benchmark, boxed answer, raw gold) cases aimed at the reference's quirks.
HANDWRITTEN = [
    ("math", "50\\%", "0.5"), ("math", "0.5", "50"), ("math", "30^\\circ", "30"), ("math", "\\frac{\\pi}{6}", "30^\\circ"),
    ("math", "\\pm 2", "2,-2"), ("math", "-2, 2", "2,-2"), ("math", "\\{1, 2\\}", "\\{2, 1\\}"), ("math", "(1,2)", "(2,1)"),
    ("math", "[1, 2)", "[1,2]"), ("math", "(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)"),
    ("math", "x \\in [2, 5]", "[2,5]"), ("math", "\\text{(C)}", "\\text{(C)}"), ("math", "C", "\\text{(C)}"),
    ("math", "\\text{Tuesday}", "\\text{Tuesday}"), ("math", "tuesday", "\\text{Tuesday}"), ("math", "five", "5"),
    ("math", "3+2i", "2i+3"), ("math", "3+2j", "3+2i"), ("math", "\\sqrt{-4}", "2i"), ("math", "e^{i\\pi}", "-1"),
    ("math", "\\log_2 8", "3"), ("math", "\\ln e", "1"), ("math", "\\sin^2 x + \\cos^2 x", "1"), ("math", "10!", "3628800"),
    ("math", "\\binom{5}{2}", "10"), ("math", "\\lfloor 2.5 \\rfloor", "2"), ("math", "|-3|", "3"), ("math", "0.\\overline{3}", "\\frac{1}{3}"),
    ("math", "1\\,000", "1000"), ("math", "1{,}000", "1000"), ("math", "\\$1,000", "1000"), ("math", "10^{3}", "1000"),
    ("math", "1e3", "1000"), ("math", "1.5 \\times 10^{3}", "1500"), ("math", "\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
    ("math", "2\\sqrt{2}", "\\sqrt{8}"), ("math", "\\sqrt[3]{8}", "2"), ("math", "x^2+2x+1", "(x+1)^2"), ("math", "y = 2x + 3", "2x+3"),
    ("math", "y = 2x + 3", "y=3+2x"), ("math", "2x - y + 3 = 0", "y = 2x + 3"), ("math", "x > 2", "x<2"), ("math", "x \\ge 2", "[2,\\infty)"),
    ("math", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("math", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}"),
    ("math", "(1, 2)", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"), ("math", "\\frac{a}{b}", "a/b"), ("math", "3/4", "0.75"),
    ("math", "\\dfrac{3}{4}", "\\frac34"), ("math", "\\frac{3}{4}\\text{ cm}^2", "\\frac{3}{4}"), ("math", "12\\text{ inches}", "12"),
    ("math", "\\text{12 inches}", "12"), ("math", "\\mathbf{12}", "12"), ("math", "\\infty", "\\infty"), ("math", "-\\infty", "\\infty"),
    ("math", "\\emptyset", "\\varnothing"), ("math", "\\mathbb{R}", "(-\\infty,\\infty)"), ("math", "k = 3", "3"), ("math", "ab = 3", "3"),
    ("math", "abc = 3", "3"), ("math", "f(x) = x^2", "x^2"), ("math", "x(x+1)", "x^2+x"), ("math", "2(x+1)", "2x+2"),
    ("math", "0.333", "\\frac{1}{3}"), ("math", "0.3333", "\\frac{1}{3}"), ("math", "0.33333", "\\frac{1}{3}"), ("math", "3.14", "\\pi"),
    ("math", "\\pi", "\\pi"), ("math", "2\\pi", "\\pi \\cdot 2"), ("math", "\\frac{\\pi}{2}", "\\frac{1}{2}\\pi"),
    ("minerva_math", "2.26 \\times 10^{-10}", "2.26e-10"), ("minerva_math", "2.26e-10", "2.26e-10"), ("minerva_math", "5 \\mathrm{~cm}", "5"),
    ("minerva_math", "3 \\text{ hours}", "3"), ("carp_en", "3 hours", "3"), ("gsm8k", "3 hours", "3"), ("gsm8k", "$18.00", "18"),
    ("gsm8k", "18 dollars", "18"), ("gsm8k", "1,234", "1234"), ("gsm8k", "007", "7"), ("college_math", "x=3, y=4", "(3,4)"),
    ("college_math", "x = 3 \\text{ or } x = 4", "3,4"), ("olympiadbench", "2^{1009}", "2^{1009}"), ("olympiadbench", "n^2", "n \\cdot n"),
    ("olympiadbench", "\\frac{n(n+1)}{2}", "\\binom{n+1}{2}"), ("gaokao2023en", "\\{x|-2\\le x<1\\}", "\\{x|-2\\leq x < 1\\}"),
    ("gaokao2023en", "-1-\\sqrt{3}i", "-1-\\sqrt{3}"), ("tabmwp", "yes", "yes"), ("tabmwp", "Yes", "yes"), ("tabmwp", "$3.50", "3.5"),
]


def stress_responses(gold_raw, gold_other, rng):
    """Model-like formatting noise, sympy rewrites, and answers borrowed from other problems."""
    out = []
    for fmt in rng.sample(FORMATS, 3):
        out.append("After simplifying, " + fmt.format(a=gold_raw))
    for form in sympy_forms(gold_raw, rng):
        out.append(f"Simplifying gives \\boxed{{{form}}}.")
    out.append(f"So the result is \\boxed{{{gold_other}}}.")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("eval_dir")
    ap.add_argument("data_dir")
    ap.add_argument("out")
    ap.add_argument("--per-bench", type=int, default=45)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--golds", help="also write per-benchmark FNV-1a digests of every gold answer and question here")
    ap.add_argument("--golds-full", help="also write every (benchmark, idx, gold) here, for diffing (not committed)")
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(args.eval_dir, "latex2sympy"))
    sys.path.insert(0, args.eval_dir)
    import parser as P  # noqa: E402  (the harness's parser.py)
    import grader as G  # noqa: E402

    if args.golds:
        write_golds(args, P)
    rng = random.Random(args.seed)
    signal.signal(signal.SIGALRM, _alarm)
    n_lines = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for name in BENCHMARKS:
            rows = load(args.data_dir, name)
            picks = rng.sample(rows, min(args.per_bench, len(rows)))
            for ex in picks:
                _, gt = P.parse_ground_truth(ex, name)
                gt = str(gt)
                gold_raw = raw_gold(ex, name, P)
                for resp in responses(ex, name, gold_raw, rng):
                    pred, correct = grade_reference(P, G, resp, name, gt)
                    row = dict(benchmark=name, response=resp, answer=gt, pred=pred, correct=correct)
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n_lines += 1
            print(name, n_lines, file=sys.stderr, flush=True)
            # stress section: formatting noise, sympy rewrites, other problems' answers
            picks = rng.sample(rows, min(args.per_bench // 2, len(rows)))
            others = rng.sample(rows, min(args.per_bench // 2, len(rows)))
            for ex, other in zip(picks, others):
                _, gt = P.parse_ground_truth(ex, name)
                gt = str(gt)
                for resp in stress_responses(raw_gold(ex, name, P), raw_gold(other, name, P), rng):
                    pred, correct = grade_reference(P, G, resp, name, gt)
                    row = dict(benchmark=name, response=resp, answer=gt, pred=pred, correct=correct)
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n_lines += 1
            print(name, "+stress", n_lines, file=sys.stderr, flush=True)
        for name, boxed, raw in HANDWRITTEN:
            gt = str(P.parse_ground_truth(gold_example(name, raw), name)[1])
            for resp in (f"Thus the answer is $\\boxed{{{boxed}}}$.", f"The answer is {boxed}"):
                pred, correct = grade_reference(P, G, resp, name, gt)
                row = dict(benchmark=name, response=resp, answer=gt, pred=pred, correct=correct)
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                n_lines += 1
        print("handwritten", n_lines, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
