"""Hessian theory for ReLU networks: exact blocks, the Gauss-Newton identity, Hutchinson, predictions.

Modules: `losses` (random losses split as out -> ell), `hessian` (exact blocks, Gauss-Newton blocks,
Kronecker-form diagonal), `hutchinson` (matrix-free diagonal), `predict` (the calculus's prediction at
batch 1 and batch B; derivation in docs/calculus.md), `setups` (Figure 1: sampled setups, predicted /
exact ratios and their summary), `heatmaps` (Figure 2's block heat maps and the 784-300-100-10 diagonal),
`convnet` (exact blocks of any `apply(params, x)` network; the strided LeNet's Figures 1-2 and the calculus's
leading-order conv-block prediction).
The paper is cited in docs/sources.md. Its figures (matplotlib) belong to the hessian experiment,
`jscale.experiments.hessian.figures`: nothing here imports matplotlib.
"""
from jscale.theory import convnet, heatmaps, hessian, hutchinson, losses, predict, setups
