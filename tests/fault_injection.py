"""Test-only: the production segmenter plus one way to break its model in place, to prove that the production
health check (Segmenter.check) notices a model that cannot run and that Serve then replaces the replica.
Ray pickles this module by value (the replicas cannot import tests/)."""

from __future__ import annotations

import os

import torch

from deployments.segmenter import SegmenterDeployment


class FaultInjectableSegmenter(SegmenterDeployment.func_or_class):
    def poison_model(self) -> int:
        """NaN weights in the mask decoder, as corrupted device memory would leave them; returns this pid."""
        with torch.no_grad():
            for parameter in self.segmenter.model.sam_mask_decoder.parameters():
                parameter.fill_(float("nan"))
        return os.getpid()
