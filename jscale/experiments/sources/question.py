"""The feature-vs-weight-scaling question (docs/sources.md, "The feature-vs-weight-scaling question").

*What is the difference between feature scaling and weight initialization scaling?*, Cross Validated question
450107, https://stats.stackexchange.com/questions/450107. Fashion-MNIST, MLP 784-300-100-10 ReLU, Glorot normal
first layer, SGD lr 0.1, batch 32, 2 epochs. Its claims are directions, not numbers: inputs divided by
QUESTION_SCALE with plain weights "converges fast"; plain inputs with first-layer weights divided by it "does
not converge (or rather converges extremely slow)".
"""

QUESTION_SCALE = 255.0   # the factor it divides the inputs (feature scale) or the first-layer weights by
