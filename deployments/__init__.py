"""The library: the graph's stages (ingress, segmenter, postprocess, image_store), their settings, errors, weights
and helpers. Nothing here imports ``serve_app``, the layer that composes and drives them."""

import os

# Several replicas share a machine's cores. libgomp's default lets idle OpenMP threads spin, which starves the
# replica that has work (docs/benchmarks/design-notes.md). Set before any stage module imports torch; an explicit
# setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
