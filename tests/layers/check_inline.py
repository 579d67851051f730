#!/usr/bin/env python3
"""Finds definitions in remora's headers that are not inline: in the default header-only mode each
translation unit of a program would define them, and a program of two such translation units would
not link (or, for internal linkage, would hold one copy per translation unit under an inline
function that names it, which the ODR forbids).

usage: check_inline.py <nm> <object file>...   exits 1 and names each such symbol

An object file of a translation unit that includes every public header is enough: an inline
function or variable is a weak symbol (W, V, u), a non-inline one a strong symbol (T, D, B, R) and
one of internal linkage a local symbol (t, d, b, r).
"""
import subprocess, sys

nm, objects = sys.argv[1], sys.argv[2:]
bad = []
for obj in objects:
    out = subprocess.run([nm, "-C", "--defined-only", obj], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        kind, name = parts[1], parts[2]
        if not name.startswith("remora::") or kind in "WVuwv":
            continue
        # What the compiler makes local by itself: a lambda's static invoker, guard variables.
        if "{lambda" in name or name.startswith("remora::detail::__"):
            continue
        if kind in "TDBRG" or "(anonymous namespace)" in name or kind in "tdbrg":
            bad.append(f"{kind} {name}")
for b in sorted(set(bad)):
    print("not inline in a header:", b)
if bad:
    print(f"{len(set(bad))} definition(s) would be duplicated by every translation unit that includes them: "
          "mark each REMORA_DECL (functions in impl/*.ipp) or inline", file=sys.stderr)
    sys.exit(1)
print(f"every remora definition in {len(objects)} object file(s) is inline")
