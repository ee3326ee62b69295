"""Mutation testing (``make mutation``): mutmut over the modules users rely on, then docs/benchmarks/mutation.json.

    python scripts/mutation.py run [MODULE ...]   mutmut run, one worker, over every listed module (or those named,
                                                  e.g. ``prompts`` or ``http_guard``, or single mutants by their name)
    python scripts/mutation.py run --pending [MODULE ...]   only the mutants not killed yet (after adding tests)
    python scripts/mutation.py report             reads mutmut's results (mutants/**/*.py.meta) and writes the JSON

What is mutated, and with which tests, is ``[tool.mutmut]`` in pyproject.toml: the modules' unit tests only, none of
which starts Ray. One thing is left out here rather than there: the Ray shells, classes decorated with
``@serve.deployment``. The decorator replaces the class by a ``Deployment`` object, on which mutmut's trampolines
cannot be set (importing the mutated module fails), and only the end-to-end tests reach those shells anyway.

Survivors are explained below, by mutant name: ``EQUIVALENT``, judged equivalent (no test can tell them from the
original, or what they change is no behaviour anyone relies on), and ``UNTESTABLE``, real changes that a test could
only catch by asserting wall-clock time, which the project's tests never do. Both still count as survivors in the
score; the report lists them apart from the unexplained ones and flags an explanation whose mutant no longer survives.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "benchmarks" / "mutation.json"
TARGET = 0.90  # killed (timeouts included) over all mutants, per module

# module -> the mutmut name prefix of its mutants
MODULES = {
    "prompts": "deployments.prompts.",
    "output_options": "deployments.output_options.",
    "geometry": "deployments.geometry.",
    "lru": "deployments.lru.",
    "image_store": "deployments.image_store.",
    "imaging": "deployments.imaging.",
    "postprocess": "deployments.postprocess.",
    "preview": "deployments.preview.",
    "png": "deployments.png.",
    "errors": "deployments.errors.",
    "http_errors": "deployments.http_errors.",
    "http_guard": "deployments.http_guard.",
}

# mutant name -> why no test can (or should) kill it. Keep it short and honest.
_PREVIEW_LEVEL = "the preview PNG's zlib level (1, or the writer's default 2): the same pixels, a few bytes more or less"
_PREVIEW_MS = ("the preview's own duration (Server-Timing): its unit and rounding could only be checked against the "
               "wall clock; the test checks it lies within the call around it")
EQUIVALENT: dict[str, str] = {
    "deployments.output_options.x__check_preview__mutmut_14": "'PNG' lower-cased in the preview_is_png message: the "
                                                              "same words to its reader",
    "deployments.output_options.x_parse_output_options__mutmut_83": "'JPEG' lower-cased in the jpeg_needs_background "
                                                                     "message: the same words to its reader",
    "deployments.errors.x_out_of_memory__mutmut_1": "the out-of-memory Retry-After default, 2 or 3 s: DESIGN.md fixes "
                                                    "that such a 503 carries Retry-After, not the number",
    "deployments.image_store.xǁImageStoreǁput__mutmut_24": "unreachable: put has already refused a record over the "
                                                            "store's budget, the only case in which the LRU refuses one",
    "deployments.preview.x_preview_cutout__mutmut_10": _PREVIEW_LEVEL,
    "deployments.preview.x_preview_cutout__mutmut_11": _PREVIEW_LEVEL,
    "deployments.http_errors.x_http_error__mutmut_2": "str() of a str detail is that detail: both branches give the "
                                                      "same text",
    "deployments.http_errors.x_unexpected_error__mutmut_9": "the log line's wording (its method, path and traceback "
                                                            "are checked)",
}
_DEFLATE = ("the deflate stream's tuning (memory level, strategy, default level): a valid stream of the same pixels, "
            "only its size differs")
_SIGNED = "a signed instead of an unsigned field: the same bytes for every size below 2**31"
_RESHAPE = "reshape(n, -2): numpy reads any negative size as 'the rest', as it does -1"
_PARTS = ("the bytes per row used to decide how many bands to compress in parallel, off by one or two: a band more or "
          "less near the threshold, the same pixels")
EQUIVALENT.update({
    "deployments.png.x__chunk__mutmut_8": _SIGNED,
    "deployments.png.x_encode_png__mutmut_91": _SIGNED,
    "deployments.png.x__encode_band__mutmut_64": _DEFLATE,
    "deployments.png.x__encode_band__mutmut_65": _DEFLATE,
    "deployments.png.x__encode_band__mutmut_68": _DEFLATE,
    "deployments.png.x_encode_png__mutmut_1": _DEFLATE,
    "deployments.png.x_encode_png__mutmut_10": _PARTS,
    "deployments.png.x_encode_png__mutmut_12": _PARTS,
    "deployments.png.x_encode_png__mutmut_31": "band edges as floats: each is passed through int() before use",
    "deployments.png.xǁCutoutRowsǁband__mutmut_26": _RESHAPE,
    "deployments.png.xǁRowsǁ__init____mutmut_19": _RESHAPE,
    "deployments.png.xǁRowsǁ__init____mutmut_4": "'PNG' lower-cased in a developer's error message",
})
_CORS_SAFE = ("a CORS allowed header's spelling: Starlette compares header names in lower case, and Content-Type and "
              "Accept are CORS-safelisted headers it allows anyway")
_DIGEST_DEFAULT = ("the default of the Authorization lookup in _key_digest: only called once _check has found the "
                   "header, and Starlette's header lookup ignores case")
_ENCODE = ("the error handler of the key's UTF-8 encoding: a header value arrives decoded as latin-1, so it holds no "
           "lone surrogate and no handler ever runs")
_HEADER_CASE = "a header name's case in the error's own headers: Starlette sends header names in lower case anyway"
_MESSAGE_CASE = "an acronym or header name lower-cased inside a refusal's message: the same words to its reader"
_CLIP = ("the clip of the grey to 0..255: the scale is chosen so that every value lies in 1..255 already (0 only "
         "when the 6-digit scale rounds up by under a millionth, then 0 or 1 both read back within half a level)")
EQUIVALENT.update({
    "deployments.http_guard.access.x_cors__mutmut_12": "max_age 600 dropped: Starlette's own default is 600",
    **{f"deployments.http_guard.access.x_cors__mutmut_{n}": _CORS_SAFE for n in (19, 20, 21, 22, 23, 24, 25, 26)},
    **{f"deployments.http_guard.access.x__key_digest__mutmut_{n}": _DIGEST_DEFAULT for n in (5, 7, 9, 10)},
    "deployments.http_guard.access.xǁApiKeysǁ_check__mutmut_14": "Starlette's header lookup ignores case",
    **{f"deployments.http_guard.access.x__key_digest__mutmut_{n}": _ENCODE for n in (17, 19, 20, 21)},
    "deployments.http_guard.access.xǁApiKeysǁ_check__mutmut_3": _HEADER_CASE,
    "deployments.http_guard.access.xǁApiKeysǁ_check__mutmut_4": _HEADER_CASE,
    **{f"deployments.http_guard.access.xǁApiKeysǁ_check__mutmut_{n}": _MESSAGE_CASE for n in (34, 57, 85)},
    "deployments.http_guard.body.x__too_large__mutmut_8": "1e6 or 1000001 bytes to the MB in the 413 message: the "
                                                          "whole number shown differs only for a limit within a "
                                                          "byte or so of an exact half megabyte",
    "deployments.preview.x_encode_logits__mutmut_12": "max(initial=None) of a non-empty grid: its maximum",
    "deployments.preview.x_encode_logits__mutmut_16": "min(initial=None) of a non-empty grid: its minimum",
    "deployments.preview.x_encode_logits__mutmut_17": "min(initial=1) instead of 0 feeds max(largest, -min): the "
                                                      "same largest magnitude whatever the signs",
    "deployments.preview.x_encode_logits__mutmut_3": "the segmenter's logits are float32 already "
                                                     "(messages.SegmentResult)",
    "deployments.preview.x_encode_logits__mutmut_5": "the segmenter's logits are float32 already "
                                                     "(messages.SegmentResult)",
    **{f"deployments.preview.x_encode_logits__mutmut_{n}": _CLIP for n in (33, 34, 44, 45)},
    "deployments.postprocess.xǁPostprocessorǁrender__mutmut_14": "a mask-only answer then has its edge colours "
                                                                  "estimated too and unused: the same mask, more work",
    "deployments.postprocess.xǁPostprocessorǁrender__mutmut_45": "PNG cut-outs then go through compose and encode "
                                                                  "instead of the band-by-band writer: the same pixels "
                                                                  "(tests: both PNG writers give the same cut-out)",
})
_NONEMPTY = "max/min with another or no initial value over a non-empty image: its own maximum"
_NAN_TO_NUM = "nan_to_num's own default for that argument is what is spelled out (0.0, or clipped to 0 below)"
_IN_RANGE = "a clip bound that no value reaches: the values are already within 0..255 there"
_BAND = ("the band height or step of the flattening loop: bands of another height, or overlapping ones, compute the "
         "same pixels")
EQUIVALENT.update({
    "deployments.imaging.x__corrupt__mutmut_13": "'Re-export' lower-cased in the corrupt_image message",
    "deployments.imaging.x__over_white__mutmut_1": _BAND,
    "deployments.imaging.x__over_white__mutmut_15": _BAND,
    "deployments.imaging.x__over_white__mutmut_22": "alpha as band[..., 3:5] of an RGBA array is band[..., 3:4]",
    "deployments.imaging.x__over_white__mutmut_44": "casting='unsafe' dropped: numpy's same_kind casting also lets "
                                                    "the uint16 sum into the uint8 output, which holds it exactly",
    **{f"deployments.imaging.x__scale_to_uint8__mutmut_{n}": _NONEMPTY for n in (23, 24, 49, 50)},
    **{f"deployments.imaging.x__scale_to_uint8__mutmut_{n}": _NAN_TO_NUM for n in (10, 12, 14)},
    "deployments.imaging.x__scale_to_uint8__mutmut_15": "float64 instead of float32 for the scaling: the same 8-bit "
                                                        "values for float32 pixels",
    "deployments.imaging.x__scale_to_uint8__mutmut_30": "a maximum of exactly 255 scaled by 255 either way",
    "deployments.imaging.x__scale_to_uint8__mutmut_31": "a maximum between 255 and 256 scaled by 255 or by itself: "
                                                        "the same 8-bit values but for rounding at a half level",
    **{f"deployments.imaging.x__scale_to_uint8__mutmut_{n}": _IN_RANGE for n in (36, 46, 68, 70, 76)},
    "deployments.imaging.x__scale_to_uint8__mutmut_55": "up to 16 bits, max(bit_length, 16) is 16 as well",
    "deployments.imaging.x__scale_to_uint8__mutmut_58": "a maximum of exactly 65535 has 16 bits either way",
    "deployments.imaging.x__scale_to_uint8__mutmut_65": "past 16 bits the bit length is 17 or more anyway",
    **{f"deployments.imaging.x_{name}": "exif_transpose of an upright image (no Orientation tag, or 1) returns an "
       "unturned copy: the same pixels" for name in ("_needs_transpose__mutmut_6", "decode_image__mutmut_35")},
    "deployments.imaging.x_decode_image__mutmut_37": "in_place=None is falsy like False: a turned copy either way",
    "deployments.imaging.x_decode_image__mutmut_39": "in_place left out: its default is False, what is spelled out",
    **{f"deployments.imaging.x_{name}": "1000001 instead of 1e6: the same figure at the precision the message prints "
       "(25, 30, 30.0)" for name in ("_open_checked__mutmut_21", "_open_checked__mutmut_46",
                                     "_open_checked__mutmut_48", "decode_image__mutmut_18")},
    **{f"deployments.imaging.x__to_rgb8__mutmut_{n}": "unreachable: an La image is converted to LA before this list "
       "is read" for n in (56, 57, 58)},
    **{f"deployments.imaging.x__to_rgb8__mutmut_{n}": "an RGBA image converted to RGBA anyway: a copy, the same "
       "pixels" for n in (64, 67, 68)},
    **{f"deployments.imaging.x_model_copy__mutmut_{n}": "Pillow's reducing_gap for the model-size copy (a speed "
       "knob: a box reduction before the bilinear filter): a grey level or two in the copy the encoder sees"
       for n in (32, 35, 37)},
})
_POOL = ("the encoder's thread pool or part count left out: the PNG is written in one band instead of several, the "
         "same pixels and the same bytes")
EQUIVALENT.update({
    "deployments.postprocess.x__tensor__mutmut_2": "the warning filter's category: every warning is silenced then, "
                                                   "the read-only one included",
    "deployments.postprocess.x__tensor__mutmut_4": "the warning filter's category: every warning is silenced then, "
                                                   "the read-only one included",
    "deployments.postprocess.x_compose__mutmut_9": "torch promotes the uint8 alpha with the int32 colours to int32 "
                                                   "anyway; 255 - alpha stays in 0..255",
    "deployments.postprocess.x_compose__mutmut_12": "the background as int64: torch promotes the sum to int64, the "
                                                    "same values",
    "deployments.postprocess.x_compose__mutmut_14": "the background as int64: torch promotes the sum to int64, the "
                                                    "same values",
    "deployments.postprocess.x_compose__mutmut_16": "true division then truncation to uint8 equals floor division for "
                                                    "these non-negative sums",
    **{f"deployments.postprocess.xǁPostprocessorǁencode__mutmut_{n}": _POOL for n in (9, 12, 13, 19, 23, 24)},
    **{f"deployments.postprocess.xǁPostprocessorǁrender__mutmut_{n}": _POOL for n in (55, 59)},
    "deployments.postprocess.xǁPostprocessorǁencode__mutmut_37": "convert(None) of pixels that are already RGB "
                                                                 "(composed on a background) or L (a mask) copies them",
    "deployments.postprocess.xǁPostprocessorǁencode__mutmut_47": "Pillow reads format names in any case",
    "deployments.postprocess.xǁPostprocessorǁencode__mutmut_57": "Pillow reads format names in any case",
    "deployments.postprocess.xǁPostprocessorǁencode__mutmut_55": "WebP's encoder effort (method 3, or its default 4): "
                                                                 "the same image, a little smaller and slower",
    "deployments.postprocess.xǁPostprocessorǁencode__mutmut_58": "WebP's encoder effort (method 3, or its default 4): "
                                                                 "the same image, a little smaller and slower",
})
_NO_RECEIVE = "a JSON refusal never reads the request: error_response(...) is handed None instead of receive"
_LOG = "the log line's wording (the refusal itself is checked)"
EQUIVALENT.update({
    "deployments.http_guard.access.xǁApiKeysǁ__call____mutmut_14": _NO_RECEIVE,
    "deployments.http_guard.body.xǁBodyLimitǁ__call____mutmut_16": _NO_RECEIVE,
    "deployments.http_guard.body.xǁBodyLimitǁ__call____mutmut_48": _NO_RECEIVE,
    "deployments.http_guard.body.xǁBodyLimitǁ__call____mutmut_70": _NO_RECEIVE,
    "deployments.http_guard.xǁRequestGuardǁ__call____mutmut_17": _NO_RECEIVE,
    "deployments.http_guard.body.x_reject_repeated_fields__mutmut_9": "Starlette's header lookup ignores case",
    "deployments.http_guard.body.x_reject_repeated_fields__mutmut_10": "a missing Content-Type read as 'XXXX' "
                                                                       "instead of '': neither is a form type",
    "deployments.http_guard.body.xǁBodyLimitǁ__call____mutmut_25": "None instead of False for a flag only tested "
                                                                   "for truth",
    "deployments.http_guard.body.xǁBodyLimitǁ__call____mutmut_27": "None instead of False for a flag only tested "
                                                                   "for truth",
    **{f"deployments.http_guard.xǁRequestGuardǁ__call____mutmut_{n}": _LOG for n in (13, 14, 15)},
    "deployments.http_guard.xǁRequestGuardǁ__init____mutmut_2": "RequestGuard.config is stored but read by nothing "
                                                                "(the stack is built from the argument)",
})
_ECHO = ("how many characters of the client's own value a message echoes (40 or 41, 80 or 81, 20 or 21): a cap "
         "against huge messages, no contract on its exact length")
_SCOPE = "a default for a key every ASGI HTTP scope carries (path), or one whose stand-in is falsy or never a prefix"
EQUIVALENT.update({
    **{name: _ECHO for name in ("deployments.prompts.x__load__mutmut_10", "deployments.prompts.x__number__mutmut_8",
                                "deployments.prompts.x__number__mutmut_19",
                                "deployments.http_guard.body.x__check_headers__mutmut_14")},
    "deployments.prompts.x__load__mutmut_7": "the JSON parser's reason with or without its position ('Expecting ',' "
                                             "delimiter: line 1 column 7 (char 6)'): both say what is wrong",
    **{f"deployments.http_guard.access.x_route_path__mutmut_{n}": _SCOPE for n in (3, 5, 8, 10, 12, 15)},
    "deployments.http_guard.access.x_route_path__mutmut_20": "an empty path read as 'XX/XX' instead of '/': neither "
                                                             "is under the API's prefixes",
    "deployments.http_guard.body.x__check_headers__mutmut_5": "Starlette's header lookup ignores case",
    "deployments.http_guard.body.x__check_headers__mutmut_26": "Starlette's header lookup ignores case",
})
EQUIVALENT.update({
    "deployments.postprocess.xǁPostprocessorǁ__init____mutmut_6": "the thread count's fallback where os.cpu_count() "
                                                                   "is None (never on Linux): parallelism only",
    "deployments.postprocess.xǁPostprocessorǁ__init____mutmut_10": "the PNG pool's size left to Python's default: "
                                                                    "parallelism only, the same bytes",
    "deployments.png.x_encode_png_fast__mutmut_1": "the fallback writer's default part count, 1 or 2: the same pixels",
    "deployments.preview.x_choose_mask__mutmut_2": "argmax of a single score is 0 as well",
    "deployments.preview.x_choose_mask__mutmut_5": "argmax of a single score is 0 as well",
    "deployments.lru.xǁLRUCacheǁput__mutmut_14": "without a time to live no deadline is ever read (_expire returns "
                                                 "first)",
    "deployments.http_guard.load.xǁDeadlineǁ__call____mutmut_1": "None instead of False for a flag only tested for "
                                                                  "truth",
    "deployments.http_guard.load.xǁInflightGateǁ__call____mutmut_3": _NO_RECEIVE,
})
EQUIVALENT.update({
    "deployments.postprocess.x_compose__mutmut_20": "torch promotes the uint8 colours with the int32 alpha to int32 "
                                                    "anyway",
    "deployments.postprocess.x_compose__mutmut_37": "the alpha channel times (alpha > 0) is the alpha itself",
    "deployments.postprocess.xǁPostprocessorǁrender__mutmut_46": "PNG cut-outs then go through compose and encode "
                                                                  "instead of the band-by-band writer: the same pixels",
    "deployments.lru.xǁLRUCacheǁput__mutmut_18": "float('INF') is float('inf')",
    "deployments.imaging.x__to_rgb8__mutmut_5": "RGB images then go through convert('RGB'): the same pixels, a copy",
})
_THREAD_NAME = "the PNG pool's thread names: diagnostics only"
EQUIVALENT.update({
    **{f"deployments.postprocess.xǁPostprocessorǁ__init____mutmut_{n}": _POOL for n in (7, 8)},
    **{f"deployments.postprocess.xǁPostprocessorǁ__init____mutmut_{n}": _THREAD_NAME for n in (9, 11, 12, 13)},
    "deployments.postprocess.xǁPostprocessorǁrender__mutmut_60": _POOL,
    **{f"deployments.postprocess.xǁPostprocessorǁrender__mutmut_{n}": "the small PNG writer then takes the compose "
       "and encode path instead of the band-by-band one: the same bytes (the same rows, level and writer)"
       for n in (50, 51)},
})
EQUIVALENT.update({
    "deployments.imaging.x__needs_transpose__mutmut_2": "a missing orientation read as None instead of 1: both mean "
                                                        "upright",
    "deployments.imaging.x__needs_transpose__mutmut_4": "a missing orientation read as None instead of 1: both mean "
                                                        "upright",
    "deployments.imaging.x__to_rgb8__mutmut_4": "RGB images then go through convert('RGB'): the same pixels, a copy",
})
EQUIVALENT.update({
    **{f"deployments.imaging.x__open_checked__mutmut_{n}": "unreachable: Pillow's Image.open refuses a file of no "
       "width or height itself ('not identified by this driver', a 415)" for n in (23, 28, 29, 30, 31, 32, 33, 34, 35)},
    "deployments.http_guard.load.xǁDeadlineǁ__call____mutmut_22": _NO_RECEIVE,
    **{f"deployments.http_guard.load.xǁDeadlineǁ__call____mutmut_{n}": _HEADER_CASE for n in (43, 44)},
})
UNTESTABLE: dict[str, str] = {
    **{f"deployments.preview.x_preview_cutout__mutmut_{n}": _PREVIEW_MS for n in (16, 17, 18, 19, 21, 22)},
    **{f"deployments.postprocess.xǁPostprocessorǁrender__mutmut_{n}": _PREVIEW_MS.replace("preview's", "upsample "
                                                                                           "stage's") for n in (29, 31)},
    **{f"deployments.postprocess.xǁPostprocessorǁrender__mutmut_{n}": _PREVIEW_MS.replace("preview's", "postprocess "
                                                                                           "stage's")
       for n in (82, 83, 84, 85, 89, 90, 91, 92, 94, 95, 99, 100, 101, 102, 104, 105)},
}


def _ray_shell_lines(metadata_wrapper) -> set[int]:
    """Lines where classes decorated with ``@serve.deployment`` (or ``@ray.serve.deployment``) start."""
    import libcst as cst
    from libcst.metadata import PositionProvider

    class Finder(cst.CSTVisitor):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def __init__(self):
            self.lines: set[int] = set()

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            for decorator in node.decorators:
                target = decorator.decorator.func if isinstance(decorator.decorator, cst.Call) else decorator.decorator
                if isinstance(target, cst.Attribute) and target.attr.value == "deployment":
                    position = self.get_metadata(PositionProvider, node)
                    self.lines.update(range(position.start.line, position.end.line + 1))

    finder = Finder()
    metadata_wrapper.visit(finder)
    return finder.lines


def _fork_safe() -> None:
    """mutmut forks a worker per mutant from its own process, which has run the tests once already. Two things do not
    survive a fork there: torch's OpenMP pool (a forked child that uses it waits forever) and a thread pool cached at
    module level (deployments.edge_colours: its threads are not in the child). So mutmut's own process keeps torch at
    one thread, and each child gets torch's thread setting back and its cached pools anew. Without this, every mutant
    whose tests touch torch or the edge colours ended as a false "timeout", counted as a kill."""
    import os

    try:
        import torch
    except ImportError:
        return
    set_num_threads = torch.set_num_threads
    set_num_threads(1)

    def one_thread(n: int) -> None:
        set_num_threads(1 if int(n) >= 1 else n)

    def in_child() -> None:
        torch.set_num_threads = set_num_threads
        for name, module in list(sys.modules.items()):
            if name.startswith("deployments.") and module is not None:
                for value in list(vars(module).values()):
                    if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
                        value.cache_clear()

    torch.set_num_threads = one_thread
    os.register_at_fork(after_in_child=in_child)


def _pending(modules: list[str]) -> list[str]:
    """The mutants of ``modules`` that are not yet killed (never run, survived, timed out, anything else) and not
    explained as equivalent or untestable."""
    names = []
    for meta in sorted((ROOT / "mutants" / "deployments").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            explained = name in EQUIVALENT or name in UNTESTABLE  # judged already: rerun only with a full run
            if any(name.startswith(MODULES[m]) for m in modules) and _status(code) != "killed" and not explained:
                names.append(name)
    return names


def run(modules: list[str]) -> None:
    import os

    import mutmut.mutation.file_mutation as file_mutation
    from mutmut.__main__ import cli

    os.chdir(ROOT)  # mutmut reads [tool.mutmut] from the working directory and writes mutants/ there

    original = file_mutation.get_ignored_lines

    def get_ignored_lines(filename, source, metadata_wrapper, coverage_excluded_lines=None):
        ignored = original(filename, source, metadata_wrapper, coverage_excluded_lines)
        ignored.ignore_node_lines |= _ray_shell_lines(metadata_wrapper)
        return ignored

    file_mutation.get_ignored_lines = get_ignored_lines
    _fork_safe()
    pending = modules[:1] == ["--pending"]
    modules = modules[1:] if pending else modules
    unknown = [m for m in modules if m not in MODULES and not m.startswith("deployments.")]
    if unknown:
        sys.exit(f"unknown module(s) {unknown}; choose from {sorted(MODULES)}, or name mutants")
    if pending:  # after new tests: rerun only what is not killed yet (a kill stays a kill)
        patterns = _pending(modules or list(MODULES))
        if not patterns:
            print("nothing pending")
            return
    else:
        patterns = [MODULES[m] + "*" if m in MODULES else m for m in modules] or [p + "*" for p in MODULES.values()]
    cli(["run", "--max-children", "1", *patterns], standalone_mode=True)


def _status(code) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[code]


def report() -> dict:
    results: dict[str, str] = {}
    for meta in sorted((ROOT / "mutants" / "deployments").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            results[name] = _status(code)

    # A mutant judged equivalent cannot be killed; one that timed out in an earlier run (before the workers were made
    # fork-safe, a hang there was no kill) is counted as the survivor it is.
    recounted = sorted(name for name, status in results.items() if status == "timeout" and name in EQUIVALENT)
    for name in recounted:
        results[name] = "survived"
    modules = {}
    for module, prefix in MODULES.items():
        statuses = {name: status for name, status in results.items() if name.startswith(prefix)}
        counts = Counter(statuses.values())
        survivors = sorted(name for name, status in statuses.items() if status == "survived")
        equivalent = [name for name in survivors if name in EQUIVALENT]
        untestable = [name for name in survivors if name in UNTESTABLE]
        killed, timeouts, total = counts["killed"], counts["timeout"], len(statuses)
        modules[module] = {
            "mutants": total,
            "killed": killed,
            "survived": counts["survived"],
            "timeouts": timeouts,
            "no_tests": counts["no tests"],
            "not_checked": counts["not checked"],
            "other": total - killed - timeouts - counts["survived"] - counts["no tests"] - counts["not checked"],
            "score": round((killed + timeouts) / total, 4) if total else None,
            "score_without_equivalent": (round((killed + timeouts) / (total - len(equivalent)), 4)
                                         if total > len(equivalent) else None),
            "survivors_equivalent": equivalent,
            "survivors_untestable": untestable,
            "survivors_unexplained": [name for name in survivors if name not in EQUIVALENT and name not in UNTESTABLE],
        }
    stale = sorted(name for name in {**EQUIVALENT, **UNTESTABLE} if results.get(name) != "survived")
    return {
        "tool": f"mutmut {_mutmut_version()}",
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target_score": TARGET,
        "score": "(killed + timeouts) / mutants, per module; a timeout counts as a kill (the mutant made the tests hang). "
                 "score_without_equivalent leaves the mutants judged equivalent out of the count (the target is "
                 "judged on it); untestable and unexplained survivors stay in",
        "left_out": "classes decorated with @serve.deployment (the Ray shells: mutmut cannot wrap them; only the "
                    "end-to-end tests reach them)",
        "all_at_target": all(m["score_without_equivalent"] is not None and m["score_without_equivalent"] >= TARGET
                             and m["not_checked"] == 0 for m in modules.values()),
        "equivalent_timeouts_counted_as_survivors": recounted,
        "modules": modules,
        "equivalent": {name: EQUIVALENT[name] for name in sorted(EQUIVALENT) if name not in stale},
        "untestable": {name: UNTESTABLE[name] for name in sorted(UNTESTABLE) if name not in stale},
        "explained_but_not_surviving": stale,
    }


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main(argv: list[str]) -> None:
    if argv[:1] == ["run"]:
        run(argv[1:])
    elif argv[:1] == ["report"]:
        result = report()
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(json.dumps(result, indent=2) + "\n")
        for module, m in result["modules"].items():
            score = "-" if m["score"] is None else f"{m['score']:.1%}"
            rest = "-" if m["score_without_equivalent"] is None else f"{m['score_without_equivalent']:.1%}"
            print(f"{module:16} killed {m['killed']:4}  survived {m['survived']:4}  timeouts {m['timeouts']:3}  "
                  f"not checked {m['not_checked']:3}  score {score}  without equivalent {rest}")
        print(f"written {OUTPUT.relative_to(ROOT)}; every module at {TARGET:.0%} or more: {result['all_at_target']}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
