#!/usr/bin/env python3
"""Checks that remora's headers include only downward, as docs/architecture.md lays the layers out:

    core <- wire <- transport <- agent <- {rref, autograd} <- dynamic <- module <- optim

A file in include/remora/<layer>/ may include its own layer and those below, never one above nor a
sibling (rref and autograd know nothing of each other); the top-level headers (remora/rpc.hpp,
...) and remora/impl/src.hpp may include anything. Layers share the `remora::detail` namespace (as
Asio's one `asio::detail`): what keeps a lower layer from using a higher one's names is that it
cannot include them, which this check enforces.

usage: check_layers.py <include dir>      exits 1 and names each upward include
"""
import pathlib, re, sys

RANK = {"core": 0, "wire": 1, "transport": 2, "agent": 3, "rref": 4, "autograd": 4, "dynamic": 5, "module": 6,
        "optim": 7}
# Public headers a layer may include as a whole (each includes only layers at or below its own).
PUBLIC = {"config.hpp": 0, "version.hpp": 0, "rpc.hpp": 3, "rref.hpp": 4, "dynamic.hpp": 6, "module.hpp": 6, "mesh.hpp": 6,
          "autograd.hpp": 7}

root = pathlib.Path(sys.argv[1]) / "remora"
bad = []
for f in sorted(root.rglob("*")):
    if f.suffix not in (".hpp", ".ipp"):
        continue
    parts = f.relative_to(root).parts
    if len(parts) < 2 or parts[0] not in RANK:
        continue  # top-level headers, impl/src.hpp
    layer = parts[0]
    for n, line in enumerate(f.read_text().splitlines(), 1):
        m = re.match(r'\s*#\s*include\s+"remora/([^"]+)"', line)
        if not m:
            continue
        target = m.group(1).split("/")
        if len(target) == 1:
            rank = PUBLIC.get(target[0])
            if rank is None or rank > RANK[layer]:
                bad.append(f"{f.relative_to(root.parent)}:{n}: {layer} includes remora/{target[0]}")
            continue
        other = target[0]
        if other not in RANK:
            continue
        if RANK[other] > RANK[layer] or (RANK[other] == RANK[layer] and other != layer):
            bad.append(f"{f.relative_to(root.parent)}:{n}: {layer} includes {other} ({m.group(1)})")
for b in bad:
    print(b)
print(f"{len(bad)} upward includes" if bad else "every include points down")
sys.exit(1 if bad else 0)
