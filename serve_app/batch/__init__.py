"""Catalogue jobs: a folder, a glob or a JSONL manifest of photos cut out as one Ray Data job.

``run(Job(...))`` (and ``bgremove batch INPUT -o OUTPUT``) streams the photos through the service's own stage
code: ``imaging.decode_image`` and ``prompts.parse_model_prompt`` on CPU tasks, ``Segmenter.encode`` / ``predict`` in
an actor pool (the model loaded once per actor, batches of ``batch_size``), ``Postprocessor.render`` on CPU
tasks that write each cut-out as it comes (temp name, then rename: a killed job leaves no half file). Every
input ends as one output file or one row of ``OUTPUT/errors.jsonl`` (``path``, ``status``, ``code``,
``message``: the HTTP API's codes); a rerun skips both. Outputs and inputs may be any filesystem pyarrow
reaches (a local folder, ``s3://...``); a glob is local.

Modules: ``inputs`` (Job, Photo, listing), ``stages`` (what Ray Data runs), ``outputs`` (atomic writes,
errors.jsonl, Summary), ``memory`` (worker RSS), ``runner`` (plan and run).
"""

from .inputs import OUTPUT_OPTIONS, Job, JobError, Photo, default_box, list_inputs
from .outputs import ERRORS_FILE, Summary
from .runner import plan, run, start_local_ray


__all__ = ["ERRORS_FILE", "OUTPUT_OPTIONS", "Job", "JobError", "Photo", "Summary", "default_box", "list_inputs",
           "plan", "run", "start_local_ray"]
