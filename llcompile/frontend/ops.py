"""Which ONNX ops llcompile can compile and train, by role.

The training backends (torch, ort) implement exactly these; anything else is refused at
import with the op's name, so a user learns it before a training run starts.
"""

# Ops with a weight: the layers that learn, and the ops whose FLOPs are counted as MACs.
PARAMETRIC_OPS = frozenset({"Conv", "Gemm", "MatMul"})

# Element-wise and normalisation ops.
ELEMENTWISE_OPS = frozenset({
    "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "Elu",
    "HardSigmoid", "HardSwish", "Softplus", "Add", "Sub", "Mul", "Div", "Sum", "Dropout",
    "Identity", "LRN", "Softmax", "LogSoftmax", "Cast",
    # transformers: GELU (opset 20, or its Erf form), LayerNorm (opset 17, or decomposed), masks
    "Gelu", "Erf", "Sqrt", "Pow", "LayerNormalization", "Where",
})

# Pooling, reshaping and joining ops.
STRUCTURAL_OPS = frozenset({
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Flatten",
    "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Pad", "Slice", "Split", "Expand",
    "ReduceMax", "ReduceMin",
    # shape arithmetic, as exporters write `x.view(x.size(0), -1)` and `token.expand(x.shape[0], -1, -1)`
    "Shape", "Gather", "Constant", "ConstantOfShape", "Equal",
})

# Ops that llcompile itself inserts (losses of the training program).
LOSS_OPS = frozenset({"SoftmaxCrossEntropyLoss"})

SUPPORTED_OPS = PARAMETRIC_OPS | ELEMENTWISE_OPS | STRUCTURAL_OPS | LOSS_OPS

# The ops that carry a model's class probabilities rather than its logits.
PROBABILITY_OPS = frozenset({"Softmax", "LogSoftmax"})
