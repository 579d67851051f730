// Owns the precompiled header the compile-fail snippets reuse (CMakeLists.txt here).
