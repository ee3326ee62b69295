"""What a click costs beyond the stages' own work, against one bare Serve call (``bgremove bench overhead``).

A click's work is what its ``Server-Timing`` reports as computing: ``read`` (the upload decoded in the ingress),
``embed`` and ``mask`` (the model), ``postprocess`` (edge, compositing, encoding), ``preview`` (a preview's
encoding, in the ingress). Its overhead is the client's time minus that work, split as far as the header allows:

* ``proxy_and_http_ms``: client time minus the ingress's ``total``: Serve's HTTP proxy, the connection, FastAPI's
  parsing and middleware, writing the answer;
* ``ingress_and_hops_ms``: ``total`` minus ``read``, ``segment`` and ``postprocess``: the calls from the ingress
  to the segmenter and the postprocess and back (routing, (de)serialisation, queueing) and the ingress's own code
  (prompt parsing, looking up a stored image);
* ``segmenter_outside_model_ms``: ``segment`` minus ``embed`` and ``mask``: fetching the pixels from the object
  store (``fetch_ms``, first clicks only), the embedding cache, the wait for the model thread.

The three add up to the overhead request by request; the breakdown lists their medians. ``ingress_and_hops_ms`` is
split further into the hops the stages time with their wall clocks (``deployments/hops.py``: ``hop_segmenter_ms``,
``hop_postprocess_ms``, ``hop_back_ms``) and ``ingress_and_shells_ms``, the rest: the ingress's own code and the
stages' Serve shells outside their timed work (the postprocess fetching the photo, handing work to its threads).
"""

from __future__ import annotations

from typing import Any

from deployments import hops

from .stats import percentiles

WORK = ("read", "embed", "mask", "postprocess", "preview")
KINDS = {  # report prefix -> name of its ratio to the echo
    "repeat_click": "repeat_overhead_over_echo",
    "repeat_click_mask_only": "repeat_mask_only_overhead_over_echo",
    "repeat_click_preview": "repeat_preview_overhead_over_echo",
    "first_click": "first_overhead_over_echo",
    "first_click_mask_only": "first_mask_only_overhead_over_echo",
}


def _parts(client_ms: float, timings: dict) -> dict[str, float]:
    get = lambda name: timings.get(name, 0.0)
    work = sum(get(name) for name in WORK)
    ingress_and_hops = get("total") - get("read") - get("segment") - get("postprocess") - get("preview")
    return {"work_ms": work, "overhead_ms": client_ms - work,
            "proxy_and_http_ms": client_ms - get("total"),
            "ingress_and_hops_ms": ingress_and_hops,
            **{f"{name}_ms": get(name) for name in hops.NAMES},
            "ingress_and_shells_ms": ingress_and_hops - sum(get(name) for name in hops.NAMES),
            "segmenter_outside_model_ms": get("segment") - get("embed") - get("mask"),
            "fetch_ms": get("fetch")}


def overhead_fields(results: dict[str, list[tuple[float, dict]]], echo: list[tuple[float, dict]],
                    chain: list[tuple[float, dict]] = ()) -> dict[str, Any]:
    """``results``: client time and Server-Timing of each click, by kind (the keys of KINDS); ``echo`` and ``chain``:
    the echo app's and the chain app's (``chain.py``) answers to the same requests."""
    echo_ms = percentiles([client_ms for client_ms, _ in echo])
    report: dict[str, Any] = {"echo_ms": echo_ms, "breakdown": {}}
    for kind, ratio in KINDS.items():
        parts = [_parts(client_ms, timings) for client_ms, timings in results[kind]]
        overhead = percentiles([p["overhead_ms"] for p in parts])
        report[f"{kind}_overhead_ms"] = overhead
        report[ratio] = round(overhead["p50"] / echo_ms["p50"], 3)
        report["breakdown"][kind] = {name: percentiles([p[name] for p in parts])["p50"] for name in parts[0]}
    if chain:  # Serve's own cost for the cut-out's calls with no work in them, and the cut-out's overhead against it
        chain_ms = percentiles([client_ms for client_ms, _ in chain])
        report["chain_ms"] = chain_ms
        report["chain_over_echo"] = round(chain_ms["p50"] / echo_ms["p50"], 3)
        report["chain_hops_ms"] = {f"{name}_ms": percentiles([timings.get(name, 0.0) for _, timings in chain])["p50"]
                                   for name in hops.NAMES}
        report["repeat_overhead_over_chain"] = round(report["repeat_click_overhead_ms"]["p50"] / chain_ms["p50"], 3)
    return report
