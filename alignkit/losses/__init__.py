"""Pure loss functions: tensors in, ``(loss, metrics)`` out. Importing this package needs only torch."""

from alignkit.losses.lm import causal_lm_loss
from alignkit.losses.reduce import masked_mean, masked_sum

__all__ = ["causal_lm_loss", "masked_mean", "masked_sum"]
