#!/usr/bin/env bash
# The GPU checks and measurements, run from the repo root on a machine with an NVIDIA GPU:
#   .gpu-wheels/ holds wheels of the GPU stack (torch with CUDA, ray, sam2, zlib-ng, ...); results land in $OUT.
# 0. tests/test_gpu.py, the GPU-only tests (skipped everywhere else): CUDA-graph encoder against eager, FP16
#    masks against FP32, a real CUDA out-of-memory answered with 503. TESTS_ONLY=1 stops after them.
# 1. the segmenter class alone: base_plus, 1024x768, FP32 / FP16 / BF16 / FP16 + CUDA-graph encoder,
#    first click, repeat click, encoder per image in a batch of 8, masks' IoU against FP32, and the floor
#    (sam2's SAM2ImagePredictor set_image + predict on the same model);
# 2. the whole Ray Serve graph over HTTP: first click (1024x768 and 12 MP JPEG), repeat click, concurrency up to
#    16 clients, the floor measured inside the segmenter replica, the old single-process design as baseline, and
#    (--overhead) the echo and chain apps with each click's overhead hop by hop; then issue 16's four GPU bars.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
rm -rf /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-wheels/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH || exit 1
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, ray, sam2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__)" | tee -a "$OUT/gpu.txt"
echo "== GPU tests"; date
timeout ${TEST_TIMEOUT:-600} python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider --junitxml "$OUT/test_gpu.xml" \
  > "$OUT/test_gpu.log" 2>&1; echo "test_gpu rc=$?"
tail -15 "$OUT/test_gpu.log"
[ -n "${TESTS_ONLY:-}" ] && exit 0
echo "== segmenter"; date
timeout ${SEG_TIMEOUT:-120} python3 -m serve_app.cli bench --segmenter --model base_plus --device cuda \
  --precision ${PRECISIONS:-fp32,fp16,bf16,fp16+graph} --first-clicks 12 --sizes 1024x768 --output "$OUT/segmenter.json" \
  > "$OUT/segmenter.log" 2>&1; echo "segmenter rc=$?"
python3 - "$OUT/segmenter.json" <<'PY' || tail -30 "$OUT/segmenter.log"
import json, sys
r = json.load(open(sys.argv[1]))["segmenter"]["precisions"]
for name, e in r.items():
    print(name, {k: (v["p50"] if isinstance(v, dict) and "p50" in v else v) for k, v in e.items()})
PY
summary() {
python3 - "$1" <<'PY' || tail -40 "${1%.json}.log"
import json, sys
r = json.load(open(sys.argv[1]))
keep = {k: r[k] for k in ("first_click_ms", "repeat_click_ms", "repeat_click_mask_only_ms", "floor_in_replica_ms",
                          "first_click_over_floor", "overhead_ratio", "throughput_rps") if k in r}
keep["12mp"] = r["sizes"].get("4032x3024")
keep["1024_stages"] = r["sizes"]["1024x768"]["stages_ms"]
keep["repeat_stages"] = r.get("repeat_click_stages_ms")
keep["concurrency"] = {c: {k: (v["p50"] if isinstance(v, dict) else v) for k, v in e.items()} for c, e in r["concurrency"].items()}
print(json.dumps(keep))
PY
}
echo "== graph"; date
timeout ${GRAPH_TIMEOUT:-300} python3 -m serve_app.cli bench --overhead --model base_plus --device cuda \
  ${GRAPH_FLAGS:---cuda-graphs} --sizes 1024x768,4032x3024 --first-clicks 10 --repeat-clicks 40 --concurrency 1,4,16 \
  --floor --plot "$OUT/latency.png" --output "$OUT/graph.json" > "$OUT/graph.log" 2>&1; echo "graph rc=$?"
summary "$OUT/graph.json"
python3 - "$OUT/graph.json" "$OUT/segmenter.json" <<'PY' || true
import json, sys
g = json.load(open(sys.argv[1]))
batch8 = json.load(open(sys.argv[2]))["segmenter"]["precisions"]["fp16+graph"]["encoder_per_image_batch8_ms"]
top = g["concurrency"][str(max(int(c) for c in g["concurrency"]))]
print("issue 16 bars:",
      "first click / floor %.2f (<= 1.25)" % g["first_click_over_floor"],
      "| repeat p50 %.1f ms (<= 12)" % g["repeat_click_ms"]["p50"],
      "| 12 MP first click p50 %.0f ms (<= 500)" % g["sizes"]["4032x3024"]["first_click_ms"]["p50"],
      "| first clicks/s at the top concurrency / batched floor %.2f (>= 0.7)" % (top["first_click_rps"] * batch8 / 1000))
print("overhead:", {k: g.get(k) for k in ("echo_ms", "chain_ms", "repeat_overhead_over_echo", "repeat_overhead_over_chain",
                                          "chain_hops_ms")}, g.get("breakdown", {}).get("repeat_click"))
PY
if [ -n "${FLAGS_RUN:-}" ]; then
echo "== graph, Serve's latency flags"; date
timeout ${FLAGS_TIMEOUT:-120} python3 -m serve_app.cli bench --model base_plus --device cuda --cuda-graphs --no-baseline \
  --serve-env RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 --serve-env RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 \
  --sizes 1024x768 --first-clicks 10 --repeat-clicks 40 --concurrency 1,4 --floor \
  --output "$OUT/graph_flags.json" > "$OUT/graph_flags.log" 2>&1; echo "flags rc=$?"
summary "$OUT/graph_flags.json"
fi
grep -h -i "cuda graph\|Traceback" "$OUT"/*.log | head -10
date
