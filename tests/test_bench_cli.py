"""`bgremove bench`: each scenario's sub-verb and the flag that chose it before parse to the same arguments
(no Ray: only the command line is read)."""

import pytest

from serve_app.bench.command import choose_scenario
from serve_app.cli import build_parser


def _parsed(argv: list[str]):
    args = build_parser().parse_args(["bench", *argv])
    scenario = choose_scenario(args)
    return scenario, vars(args)


@pytest.mark.parametrize("verb, flags, scenario", [
    ([], [], "graph"),
    (["graph"], [], "graph"),
    (["overhead"], ["--overhead"], "overhead"),
    (["routing", "12x5"], ["--routing", "12x5"], "routing"),
    (["routing"], ["--routing", "20x5"], "routing"),
    (["segmenter", "--precision", "fp32,fp16"], ["--segmenter", "--precision", "fp32,fp16"], "segmenter"),
    (["batch", "--batch-set", "64x64:2"], ["--batch", "--batch-set", "64x64:2"], "batch"),
    (["batch-memory", "40"], ["--batch-memory", "40"], "batch-memory"),
    (["batch-memory"], ["--batch-memory", "500"], "batch-memory"),
])
def test_a_sub_verb_and_its_flag_parse_alike(verb, flags, scenario):
    common = ["--model", "tiny", "--first-clicks", "3", "--no-baseline", "--serve-env", "A=1"]
    by_verb = _parsed([*verb, *common]) if verb else _parsed(common)
    by_flag = _parsed([*common, *flags])
    assert by_verb == by_flag
    assert by_verb[0] == scenario


def test_settings_given_before_the_sub_verb_are_kept():
    scenario, args = _parsed(["--model", "small", "--repeat-clicks", "5", "overhead", "--first-clicks", "2"])
    assert (scenario, args["model"], args["repeat_clicks"], args["first_clicks"]) == ("overhead", "small", 5, 2)


def test_the_default_is_the_graph_with_the_old_defaults():
    scenario, args = _parsed([])
    assert scenario == "graph"
    assert (args["sizes"], args["first_clicks"], args["repeat_clicks"], args["concurrency"]) == \
        ("1024x768,4032x3024", 7, 42, "1,4")
    assert not (args["overhead"] or args["segmenter"] or args["batch"] or args["routing"] or args["batch_memory"])
