"""Hessian theory for ReLU networks: exact blocks, the Gauss-Newton identity, Hutchinson, predictions.

Modules: `losses` (random losses split as out -> ell), `hessian` (exact blocks, Gauss-Newton blocks,
Kronecker-form diagonal), `hutchinson` (matrix-free diagonal), `predict` (the calculus's prediction at
batch 1 and batch B), `experiments` (the paper's Figures 1-2 and the 784-300-100-10 diagonal).
"""
from jscale.theory import hessian, hutchinson, losses, predict
