"""What every backbone shares: input normalisation buffers and the precision switch."""
from __future__ import annotations

import torch
import torch.nn as nn


class Backbone(nn.Module):
    """A frozen feature extractor: ``features(image, names) -> {name: tensor}`` on RGB [0, 1]
    images; subclasses register ``mean`` and ``std`` buffers."""

    autocast_dtype = None   # set by set_precision

    def set_precision(self, dtype) -> "Backbone":
        """Run the network under autocast in ``dtype`` (None: float32), channels_last inside."""
        self.autocast_dtype = dtype
        if dtype is not None and self.mean.device.type in ("cpu", "cuda"):
            self.to(memory_format=torch.channels_last)
        return self

    def _input(self, image: torch.Tensor, names) -> tuple[torch.Tensor, int]:
        """The network's input for ``image`` (channels_last under autocast) and the index of
        the deepest of ``names`` in ``self.names``."""
        deepest = max(self.names.index(n) for n in names)
        x = self.preprocess(image)
        if self.autocast_dtype is not None and x.device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        return x, deepest
