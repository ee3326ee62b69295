"""The graph's stages, one module each: ingress, segmenter, postprocess, image_store."""

import os

# Several replicas share a machine's cores. libgomp's default lets idle OpenMP threads spin, which starves the
# replica that has work: on 2 busy cores one mask decode took 830 ms with spinning and 130 ms with passive
# waiting. Set before any stage module imports torch; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
