"""The paper's networks as pure init/apply functions and Flax modules (same parameter trees).

  lenet   the strided LeNet of its Figures 1-2 (stride = kernel, no max pooling)
  resnet  the pre-activation bottleneck block of its Section 11 with the calculus's fixed scalars, and a small
          unnormalised ResNet around it
Models import only jscale.initializers, jax and flax.
"""
from jscale.models.lenet import LeNet, LeNetConfig, apply_lenet, init_lenet
from jscale.models.resnet import (BlockConfig, BottleneckBlock, ResNet, ResNetConfig, apply_block, apply_resnet,
                                  block_scalars, init_block, init_resnet)
