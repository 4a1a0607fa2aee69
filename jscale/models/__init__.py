"""The paper's networks as pure init/apply functions and Flax modules (same parameter trees).

  lenet   the strided LeNet of its Figures 1-2 (stride = kernel, no max pooling)
  resnet  the pre-activation bottleneck block of its Section 11 with the calculus's fixed scalars, and a small
          unnormalised ResNet around it
  model   `Model`: any classifier (init + apply functions, a Flax module, the LeNet) as `jscale.train` trains it;
          `get_model(name, n_out, **options)` by name
Models import only jscale.initializers, jax, flax and numpy.
"""
from jscale.models.lenet import LeNet, LeNetConfig, apply_lenet, init_lenet
from jscale.models.resnet import (BlockConfig, BottleneckBlock, ResNet, ResNetConfig, apply_block, apply_resnet,
                                  block_scalars, init_block, init_resnet)
from jscale.models.model import MODELS, Model, get_model
