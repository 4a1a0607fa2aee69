"""The init-scale convergence tutorial (docs/sources.md, "The init-scale convergence tutorial").

Mohanasundaram Manohran, *Effect of Weight Initialization Scale on Convergence*, tutorial report, code at
https://github.com/Mohan-Mj2312/Machine-Learning.git (no date or venue stated). One MLP 2-64-64-2 on two moons,
W ~ N(0, sigma^2) on every kernel, zero biases, Adam lr 1e-3, 200 epochs, one run per sigma.
"""

# Table 1 (one run each): test accuracy per sigma.
TUTORIAL_TEST_ACC: dict[float, float] = {0.01: 0.8733, 0.1: 0.9483, 0.5: 0.9367, 1.0: 0.9183}
TUTORIAL_SIGMAS = tuple(TUTORIAL_TEST_ACC)
TUTORIAL_EPOCHS = 200   # its runs' length: a run of fewer epochs is no like-for-like comparison
TUTORIAL_INIT = "normal:1"   # W ~ N(0, sigma^2) as a jscale initializer, sigma = init_scale
