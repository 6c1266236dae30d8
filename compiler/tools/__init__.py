"""Scripts run by a tool environment's Python (:mod:`compiler.toolenv`), never imported by the
compiler: each imports only the standard library and its tool's own packages."""
