"""``bgremove bench``: latency, throughput and overhead of the graph, printed as one JSON object per run.

One module per scenario (``graph``, ``overhead`` with ``echo``, ``routing``, ``segmenter``, ``batch``, and the
``baseline`` the graph is compared with); ``stats``, ``client`` and ``local_graph`` are what they share;
``command`` is the sub-verbs and flags.
"""

from .command import add_arguments, main

__all__ = ["add_arguments", "main"]
