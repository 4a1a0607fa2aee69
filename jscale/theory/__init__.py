"""Hessian theory for ReLU networks: exact blocks, the Gauss-Newton identity, Hutchinson, predictions.

Modules: `losses` (random losses split as out -> ell), `inputs` (the input laws and their exact statistics),
`hessian` (exact blocks of any network `apply(params, x)`, dense or conv: `jax.hessian`, Gauss-Newton blocks
and factors, the MLP's Kronecker-form diagonal), `hutchinson` (matrix-free diagonal), `pairs` (the MLP's
exact expected diagonal from pairs of examples, with control variates), `conv_pairs` (the same for the
strided LeNet, in the position form), `predict` (the calculus's MLP block prediction at batch 1 and batch B;
derivation in docs/calculus.md), `predict_conv` (its leading-order conv / LeNet block prediction), `full_order`
(the full-order prediction for dense and strided-conv layers alike: points = example x position).
Mathematics only: the paper's Figures 1-2 (sampled setups, rounds, records, summaries, heat maps) are the
hessian experiment's protocol, `jscale.experiments.hessian`; nothing here imports matplotlib or an experiment.
"""
from jscale.theory import conv_pairs, full_order, hessian, hutchinson, inputs, losses, pairs, predict, predict_conv
