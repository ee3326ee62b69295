"""`bgremove bench overhead` once through Ray (tiny, random weights, a few clicks): its fields exist and agree
with each other. No time is asserted."""

import pytest

from serve_app.bench.command import choose_scenario
from serve_app.bench.graph import measure_graph
from serve_app.bench.overhead import KINDS
from serve_app.cli import build_parser


@pytest.mark.e2e
def test_the_overhead_scenario_reports_consistent_fields(app_url):
    from ray import serve

    args = build_parser().parse_args(["bench", "overhead", "--sizes", "320x240", "--first-clicks", "2",
                                      "--repeat-clicks", "4", "--concurrency", "1", "--no-baseline"])
    assert choose_scenario(args) == "overhead"
    report = {}
    try:
        measure_graph(app_url, args, report)
    finally:
        serve.delete("bench_echo")
        serve.delete("bench_chain")
    assert report["echo_ms"]["n"] == 4 and report["echo_ms"]["p50"] > 0
    # The chain app answered the same requests through the graph's shape, timing each of its hops.
    assert report["chain_ms"]["n"] == 4 and report["chain_over_echo"] > 0
    assert all(hop > 0 for hop in report["chain_hops_ms"].values()) and len(report["chain_hops_ms"]) == 3
    assert report["repeat_overhead_over_chain"] == pytest.approx(
        report["repeat_click_overhead_ms"]["p50"] / report["chain_ms"]["p50"], abs=2e-3)
    for kind, ratio in KINDS.items():
        client = report[f"{kind}_ms"] if kind != "first_click" else report["sizes"]["320x240"]["first_click_ms"]
        overhead = report[f"{kind}_overhead_ms"]
        assert overhead["n"] == client["n"]
        assert overhead["p50"] <= client["p50"] and overhead["p99"] <= client["p99"]
        assert report[ratio] == pytest.approx(overhead["p50"] / report["echo_ms"]["p50"], abs=2e-3)
        parts = report["breakdown"][kind]
        assert set(parts) >= {"work_ms", "overhead_ms", "proxy_and_http_ms", "ingress_and_hops_ms",
                              "segmenter_outside_model_ms", "ingress_and_shells_ms"}
        assert parts["work_ms"] > 0
        # Every click goes to the segmenter and comes back; only a preview skips the postprocess.
        assert parts["hop_segmenter_ms"] > 0 and parts["hop_back_ms"] > 0
        assert (parts["hop_postprocess_ms"] > 0) == (kind != "repeat_click_preview")
        assert parts["ingress_and_shells_ms"] >= -0.1
    for key in ("first_click_ms", "repeat_click_ms", "repeat_speedup", "first_click_mask_only_ms",
                "repeat_click_mask_only_ms", "repeat_speedup_mask_only", "repeat_click_preview_ms",
                "repeat_speedup_preview"):
        assert key in report
    # The preview is answered by the ingress: its timings name no postprocess, and its work includes the encoding.
    assert "postprocess" not in report["repeat_click_preview_stages_ms"]
    assert "preview" in report["repeat_click_preview_stages_ms"]


def test_the_overhead_parts_add_up_to_the_client_time_minus_the_work():
    from serve_app.bench.overhead import overhead_fields

    hops = {"hop_segmenter": 3.0, "hop_postprocess": 6.0, "hop_back": 4.0}
    repeat = (100.0, {"mask": 40.0, "segment": 42.0, "postprocess": 20.0, "upsample": 18.0, "total": 80.0, **hops})
    first = (900.0, {"read": 5.0, "fetch": 3.0, "embed": 700.0, "mask": 40.0, "segment": 750.0,
                     "postprocess": 20.0, "total": 800.0})
    preview = (70.0, {"mask": 40.0, "segment": 42.0, "preview": 1.0, "total": 50.0, "hop_segmenter": 3.0,
                      "hop_back": 2.5})
    chain = (32.0, {"hop_segmenter": 2.0, "hop_postprocess": 5.0, "hop_back": 3.0})
    report = overhead_fields({"repeat_click": [repeat], "repeat_click_mask_only": [repeat],
                              "repeat_click_preview": [preview], "first_click": [first],
                              "first_click_mask_only": [first]}, [(20.0, {})], [chain])
    assert report["repeat_click_overhead_ms"]["p50"] == 40.0 and report["repeat_overhead_over_echo"] == 2.0
    assert report["breakdown"]["repeat_click"] == {
        "work_ms": 60.0, "overhead_ms": 40.0, "proxy_and_http_ms": 20.0, "ingress_and_hops_ms": 18.0,
        "hop_segmenter_ms": 3.0, "hop_postprocess_ms": 6.0, "hop_back_ms": 4.0, "ingress_and_shells_ms": 5.0,
        "segmenter_outside_model_ms": 2.0, "fetch_ms": 0.0}
    assert report["breakdown"]["repeat_click_preview"] == {
        "work_ms": 41.0, "overhead_ms": 29.0, "proxy_and_http_ms": 20.0, "ingress_and_hops_ms": 7.0,
        "hop_segmenter_ms": 3.0, "hop_postprocess_ms": 0.0, "hop_back_ms": 2.5, "ingress_and_shells_ms": 1.5,
        "segmenter_outside_model_ms": 2.0, "fetch_ms": 0.0}
    assert report["chain_ms"]["p50"] == 32.0 and report["chain_over_echo"] == 1.6
    assert report["chain_hops_ms"] == {"hop_segmenter_ms": 2.0, "hop_postprocess_ms": 5.0, "hop_back_ms": 3.0}
    assert report["repeat_overhead_over_chain"] == 1.25
    parts = report["breakdown"]["first_click"]
    assert parts["overhead_ms"] == 900 - 765 == parts["proxy_and_http_ms"] + parts["ingress_and_hops_ms"] + \
        parts["segmenter_outside_model_ms"]
    assert parts["fetch_ms"] == 3.0 and report["first_overhead_over_echo"] == 6.75
