#!/usr/bin/env python3
"""The architecture's rules, checked: no import circles between the modules of any crate, and
the crate dependency rules of docs/architecture.md over `cargo metadata`.

Module graph: every `.rs` file under a crate's `src/` is a module (`src/a.rs` and
`src/a/mod.rs` are `a`, `src/a/b.rs` is `a::b`, `lib.rs`/`main.rs` the root). A module depends
on another when its code names it: `use crate::a::b::...`, `super::...`, `self::...`, a path
starting with a child module, or an inline `crate::a::b::x` path. The target is the longest
module prefix of the path. Declaring a child (`mod x;`) is not a dependency, and neither is a
reference from a module to one of its own ancestors or descendants (a module and the folder it
heads are one room). Test-only code (`#[cfg(test)]` modules in their own files, `tests.rs`,
`*_tests.rs`, `fixtures.rs`) is left out: tests may look anywhere.

Usage: check.py [--root DIR] [--no-metadata] [--list]
Exit status: 0 when every rule holds, 1 otherwise (each broken rule printed as a sentence).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

# --- crate-level rules (keep in step with docs/architecture.md, "Invariants") -----------------
# Crates named on the left may depend (normal dependencies) only on workspace crates named on
# the right. A workspace crate missing from this table is a broken rule too: say where it sits.
ALLOWED = {
    "fleet-core": set(),
    "fleet-durable": set(),
    "fleet-config": set(),
    "fleet-proto": {"fleet-core"},
    "fleet-facts": {"fleet-core", "fleet-proto", "fleet-durable"},
    "fleet-mqtt": set(),
    "fleet-bootctl": {"fleet-core", "fleet-durable"},
    "fleet-rauc": {"fleet-core"},
    "fleet-sim": {"fleet-core", "fleet-bootctl", "fleet-durable"},
    "fleet-updated": {
        "fleet-core", "fleet-config", "fleet-durable", "fleet-proto", "fleet-mqtt",
        "fleet-bootctl", "fleet-rauc", "fleet-sim", "fleet-facts", "fleet-retentiond",
    },
    "fleet-recorderd": {"fleet-core", "fleet-config", "fleet-durable", "fleet-bootctl", "fleet-facts"},
    "fleet-retentiond": {"fleet-core", "fleet-config", "fleet-durable", "fleet-bootctl", "fleet-facts"},
    "fleet-reporterd": {
        "fleet-core", "fleet-config", "fleet-durable", "fleet-proto", "fleet-mqtt",
        "fleet-bootctl", "fleet-facts",
    },
    "fleet-uploaderd": {
        "fleet-core", "fleet-config", "fleet-durable", "fleet-bootctl", "fleet-retentiond",
        "fleet-facts",
    },
    "fleet": {
        "fleet-core", "fleet-config", "fleet-durable", "fleet-proto", "fleet-bootctl",
        "fleet-rauc", "fleet-updated", "fleet-facts",
    },
    "fleetctl": {
        "fleet-core", "fleet-config", "fleet-durable", "fleet-proto", "fleet-mqtt", "fleet-sim",
        "fleet-updated", "fleet-bootctl", "fleet-recorderd", "fleet-retentiond",
        "fleet-uploaderd",
    },
    "fleet-testkit": None,  # dev-only: anything
}
# Crates that only tests may depend on.
DEV_ONLY = {"fleet-testkit"}
# Outside crates the pure core must never depend on (I/O, async runtimes, clocks, randomness).
CORE_FORBIDDEN = {"tokio", "rand", "rumqttc", "zbus", "rusqlite", "alsa", "tracing", "chrono",
                  "reqwest", "nix", "libc", "getrandom"}

TEST_FILE = re.compile(r"(^|/)(tests|fixtures|[a-z_]+_tests)\.rs$")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        # Drop `//` comments outside string literals (good enough: paths never sit in strings
        # next to a `//`).
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line):
            c = line[i]
            if c == '"' and (i == 0 or line[i - 1] != "\\"):
                in_str = not in_str
            elif not in_str and line.startswith("//", i):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    text = "\n".join(out)
    # String literals never hold module paths we care about.
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def drop_inline_tests(text: str) -> str:
    """Removes `#[cfg(test)] mod name { ... }` blocks (brace-matched)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth = 0
        i = m.end() - 1
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        text = text[: m.start()] + text[i + 1:]


def expand_use(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    depth = 0
    for i, c in enumerate(tree):
        if c == "{":
            if depth == 0:
                prefix = tree[:i]
                inner = tree[i + 1: tree.rindex("}")]
                parts, depth2, start = [], 0, 0
                for j, d in enumerate(inner):
                    if d == "{":
                        depth2 += 1
                    elif d == "}":
                        depth2 -= 1
                    elif d == "," and depth2 == 0:
                        parts.append(inner[start:j])
                        start = j + 1
                parts.append(inner[start:])
                out = []
                for p in parts:
                    if p:
                        out.extend(expand_use(prefix + p))
                return out
            depth += 1
    return [re.sub(r"\bas\b.*$", "", tree)]


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return ()
    return tuple(parts)


def resolve(path: list[str], here: tuple[str, ...], modules: set[tuple[str, ...]],
            reexports=None, depth: int = 0):
    """The module a path names (longest module prefix, following `pub use` re-exports), or
    None when outside the crate."""
    if not path:
        return None
    head = path[0]
    if head == "crate":
        base, rest = (), path[1:]
    elif head == "self":
        base, rest = here, path[1:]
    elif head == "super":
        base, rest = here, path
        while rest and rest[0] == "super":
            base = base[:-1]
            rest = rest[1:]
    elif here + (head,) in modules:
        base, rest = here, path
    else:
        return None
    best = base
    cur = base
    for i, seg in enumerate(rest):
        cur = cur + (seg,)
        if cur in modules:
            best = cur
            continue
        # An item the module re-exports: the module that defines it.
        if reexports and depth < 8 and seg in reexports.get(best, {}):
            src_module, src_path = reexports[best][seg]
            target = resolve(src_path, src_module, modules, reexports, depth + 1)
            if target is not None:
                return target
        break
    return best


def parse_reexports(src: Path, files, modules):
    """Per module: re-exported name -> (module of the `pub use`, path it names)."""
    out: dict[tuple[str, ...], dict[str, tuple[tuple[str, ...], list[str]]]] = {}
    for f in files:
        here = module_of(src, f)
        text = strip_comments(f.read_text(encoding="utf-8"))
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            for p in expand_use(m.group(1)):
                parts = p.lstrip(":").split("::")
                alias = re.search(r"\bas\s+(\w+)", m.group(1))
                out.setdefault(here, {})[parts[-1]] = (here, parts)
    return out


def related(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


def crate_graph(src: Path):
    files = [f for f in src.rglob("*.rs")]
    modules = {module_of(src, f) for f in files}
    reexports = parse_reexports(src, files, modules)
    edges: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in modules}
    for f in files:
        rel = str(f.relative_to(src))
        if TEST_FILE.search(rel) or "/bin/" in f"/{rel}":
            continue
        here = module_of(src, f)
        text = drop_inline_tests(strip_comments(f.read_text(encoding="utf-8")))
        paths: list[str] = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            paths.extend(expand_use(m.group(1)))
        for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", text):
            paths.append(m.group(1))
        for p in paths:
            p = p.lstrip(":")
            target = resolve(p.split("::"), here, modules, reexports)
            if target is None or related(here, target):
                continue
            edges[here].add(target)
    return modules, edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(m: tuple[str, ...]) -> str:
    return "::".join(m) if m else "crate"


def check_modules(root: Path) -> list[str]:
    problems = []
    for cargo in sorted(root.glob("firmware/*/Cargo.toml")):
        src = cargo.parent / "src"
        if not src.is_dir():
            continue
        _, edges = crate_graph(src)
        for comp in cycles(edges):
            problems.append(
                f"{cargo.parent.name} has an import circle between modules "
                + ", ".join(name(m) for m in comp)
            )
    return problems


def check_crates(root: Path) -> list[str]:
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=root, check=True, capture_output=True, text=True).stdout)
    members = {p["name"]: p for p in meta["packages"]}
    problems = []
    for crate, pkg in sorted(members.items()):
        if crate not in ALLOWED:
            problems.append(f"{crate} is not placed in the crate rules of tests/architecture/check.py")
            continue
        allowed = ALLOWED[crate]
        for dep in pkg["dependencies"]:
            d, kind = dep["name"], dep.get("kind")
            if kind == "dev":
                continue
            if d in members:
                if d in DEV_ONLY:
                    problems.append(f"{crate} depends on the dev-only crate {d} outside its tests")
                elif allowed is not None and d not in allowed:
                    problems.append(f"{crate} depends on {d}, which the crate rules forbid")
            elif crate == "fleet-core" and d in CORE_FORBIDDEN:
                problems.append(f"fleet-core depends on {d}: the core does no I/O, keeps no clock and draws no randomness")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    ap.add_argument("--no-metadata", action="store_true", help="skip the crate-level rules")
    ap.add_argument("--list", action="store_true", help="print every module edge")
    args = ap.parse_args()
    if args.list:
        for cargo in sorted(args.root.glob("firmware/*/Cargo.toml")):
            src = cargo.parent / "src"
            if src.is_dir():
                _, edges = crate_graph(src)
                for a in sorted(edges):
                    for b in sorted(edges[a]):
                        print(f"{cargo.parent.name}: {name(a)} -> {name(b)}")
    problems = check_modules(args.root)
    if not args.no_metadata:
        problems += check_crates(args.root)
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print("architecture: no import circles; crate dependency rules hold")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
