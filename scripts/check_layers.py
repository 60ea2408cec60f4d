#!/usr/bin/env python3
"""Checks the architecture pinpipe's folders show (docs/architecture.md):

1. crates: no Lambda links code it does not run. The ingest API links neither pinpipe-core nor
   polars nor deltalake; no Lambda links pinpipe-devtools (the generator and fault schedules);
   pinpipe-model links no dataframe or Delta code.
2. pinpipe-core's files import only down its layers (jobs > analysis > writer > delta >
   storage > clean > error, with the record model below all), never up;
3. no cycle of imports among pinpipe-core's files.

Test modules (`#[cfg(test)] mod tests`) are left out: a test may read any layer.

Usage: check_layers.py [REPO] [--no-crates]   (exit 1 and one line per problem on failure)
"""

import json
import re
import subprocess
import sys
from pathlib import Path

LAYERS = ["error", "clean", "storage", "delta", "writer", "analysis", "jobs"]
MODEL = {"names", "record", "metrics", "logging", "watermark", "Kind", "PipelineId"}
LAMBDAS = ["ingest-api", "kafka-sink", "kinesis-sink", "batch-analysis"]
# Crates a package must not link, directly or through others.
FORBIDDEN = {
    "ingest-api": ["pinpipe-core", "pinpipe-devtools", "polars", "deltalake"],
    "pinpipe-ingest": ["pinpipe-core", "pinpipe-devtools", "polars", "deltalake"],
    "pinpipe-model": ["pinpipe-core", "polars", "deltalake", "arrow"],
    "kafka-sink": ["pinpipe-devtools"],
    "kinesis-sink": ["pinpipe-devtools"],
    "batch-analysis": ["pinpipe-devtools"],
}


def crate_problems(repo: Path, locked: bool = True) -> list[str]:
    flag = "--locked" if locked else "--offline"
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", flag],
        cwd=repo, check=True, capture_output=True, text=True).stdout)
    names = {p["id"]: p["name"] for p in meta["packages"]}
    deps = {n["id"]: [d["pkg"] for d in n["deps"]
                      if any(k["kind"] in (None, "normal") for k in d["dep_kinds"])]
            for n in meta["resolve"]["nodes"]}
    by_name = {}
    for pid, name in names.items():
        if pid in deps and any(pid == m for m in meta["workspace_members"]):
            by_name[name] = pid
    problems = []
    for pkg, banned in FORBIDDEN.items():
        seen, todo = set(), [by_name[pkg]]
        while todo:
            cur = todo.pop()
            for d in deps.get(cur, []):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        linked = {names[d] for d in seen}
        for b in banned:
            if b in linked:
                problems.append(f"crate {pkg} links {b} (it must not: see scripts/check_layers.py)")
    return problems


def strip_tests(text: str) -> str:
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\b", text)
    return text[: m.start()] if m else text


def module_of(src: Path, f: Path) -> list[str]:
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def expand_use_groups(text: str) -> list[str]:
    """`crate::a::{b, c::{d, e}}` and `super::{x}` → `crate::a::b`, `crate::a::c::d`, … ."""
    paths = []
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)*)::\{", text):
        paths += expand_group(m.group(1), text[m.end():])
    paths += re.findall(r"\b(?:crate|super)(?:::\w+)+", text)
    return paths


def expand_group(prefix: str, rest: str) -> list[str]:
    """The paths of the group that starts at `rest` (just after its `{`)."""
    depth, i = 1, 0
    while i < len(rest) and depth:
        depth += {"{": 1, "}": -1}.get(rest[i], 0)
        i += 1
    out = []
    for item in split_top(rest[: i - 1]):
        item = item.strip()
        if not item or item == "self" or item.startswith("self "):
            continue
        inner = re.match(r"((?:\w+::)*\w+)::\{", item)
        if inner:
            out += expand_group(prefix + "::" + inner.group(1), item[inner.end():])
        else:
            out.append(prefix + "::" + re.split(r"[\s{]", item)[0])
    return out


def split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    out.append(cur)
    return out


def core_problems(src: Path) -> list[str]:
    files = {tuple(module_of(src, f)): f for f in src.rglob("*.rs")
             if f.name != "tests.rs" and f.name != "lib.rs"}

    def resolve(mod: list[str], path: str):
        segs = path.split("::")
        if segs[0] == "crate":
            segs = segs[1:]
        else:
            base = list(mod)
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            segs = base + segs
        if segs and segs[0] in MODEL:
            return None
        for n in range(len(segs), 0, -1):
            if tuple(segs[:n]) in files:
                return tuple(segs[:n])
        return None

    edges = {m: set() for m in files}
    for mod, f in files.items():
        text = strip_tests(f.read_text())
        text = re.sub(r"//[^\n]*", "", text)
        for p in expand_use_groups(text):
            target = resolve(list(mod), p)
            if target and target != mod:
                edges[mod].add(target)
        # A folder's mod.rs naming its own child (`coverage::Gap` after `pub mod coverage;`).
        if f.name == "mod.rs":
            for child in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod (\w+);", text, re.M):
                if re.search(r"(?<!mod )\b%s::" % child, text) and mod + (child,) in files:
                    edges[mod].add(mod + (child,))

    problems = []
    rank = {name: i for i, name in enumerate(LAYERS)}
    for a, targets in edges.items():
        for b in targets:
            la, lb = rank.get(a[0]), rank.get(b[0])
            if la is None or lb is None:
                problems.append(f"{'/'.join(a)} or {'/'.join(b)}: not in a known layer ({', '.join(LAYERS)})")
            elif lb > la:
                problems.append(f"{files[a].relative_to(src)} imports {files[b].relative_to(src)}: "
                                f"{LAYERS[la]} must not import from {LAYERS[lb]} (a higher layer)")

    # Cycles (Tarjan's strongly connected components).
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    for comp in comps:
        problems.append("import cycle among: " + ", ".join(sorted(str(files[m].relative_to(src)) for m in comp)))
    return problems


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    repo = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    problems = core_problems(repo / "shared" / "core" / "src")
    if "--no-crates" not in sys.argv:
        problems += crate_problems(repo)
    for p in problems:
        print(p)
    if not problems:
        print("layers: ok (crates link what they run; core imports run down its layers, no cycles)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
