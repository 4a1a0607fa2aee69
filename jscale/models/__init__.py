"""The networks jscale trains and inspects, as pure init/apply functions and Flax modules (same parameter trees).

  lenet    the strided LeNet of the paper's Figures 1-2 (stride = kernel, no max pooling)
  resnet   the pre-activation bottleneck block of its Section 11 with the calculus's fixed scalars, and a small
           unnormalised ResNet around it
  transformer  a small pre-LN transformer classifier (token and position embeddings, softmax attention, GELU
           MLP, LayerNorm, mean over tokens) for the calculus on modern blocks
  model    `Model`: any classifier (init + apply functions, a Flax module) as `jscale.train` trains it
  catalog  the named models: `mlp(widths)` (the MLP of `jscale.mlp` as a `Model`), `lenet(...)`,
           `transformer(...)`, `get_model(name, n_out, **options)`
Models import only jscale.mlp, jscale.initializers, jscale.checks, jax, flax and numpy.
"""
from jscale.models.lenet import LeNet, LeNetConfig, apply_lenet, init_lenet
from jscale.models.resnet import (BlockConfig, BottleneckBlock, ResNet, ResNetConfig, apply_block, apply_resnet,
                                  block_scalars, init_block, init_resnet)
from jscale.models.transformer import (Transformer, TransformerConfig, apply_transformer, init_transformer,
                                      random_tokens)
from jscale.models.model import Model
from jscale.models.catalog import MODELS, get_model, mlp, model_of
