"""Where a TFLite file's ops run on a phone: `xnnpack_split` (the ops LiteRT's default
XNNPACK CPU delegate takes, and those left to LiteRT's own kernels) and
`gpu_compatibility` (the ops LiteRT's GPU delegate would refuse, and why).

GPU delegate check: LiteRT's analyzer (`tf.lite.experimental.Analyzer.analyze(...,
gpu_compatibility=True)`) no longer runs the check it documents (TensorFlow 2.21 and
ai-edge-litert 2.3 print "looks compatible" for any file, even one of Flex ops), so
`gpu_compatibility` applies the GPU delegate's own per-op rules (LiteRT's
`tools/versioning/gpu_compatibility.cc`, the check the delegate runs on each node) to the
file, and adds whatever the analyzer reports, should a release restore its check.
"""

import contextlib
import io
import os
import re
from importlib.util import find_spec

import numpy as np

from keras_vit.backend.private_apis import tflite_nodes
from keras_vit.export.tflite_graph import op_names


def _check_file(path):
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"Expected a .tflite file, got {path!r}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No TFLite file at {path!r}.")
    return path


def _counts(names):
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def xnnpack_split(path, num_threads=1):
    """How LiteRT's default XNNPACK delegate splits a TFLite file's main graph.

    The file is loaded as an app loads it (the LiteRT interpreter with its default
    delegate, applied at `allocate_tensors`); each delegate partition's ops are the ops
    between its input and output tensors. Returns a dict: "delegated" and "fallback"
    ({op name: count}, most frequent first: the ops XNNPACK runs, and those LiteRT's
    reference or optimized kernels run outside it), "partitions" (the number of XNNPACK
    subgraphs; each boundary costs a hand-over) and "num_ops" (the file's op count, the
    sum of both counts).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=_check_file(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    nodes = tflite_nodes(interpreter)
    ops = {index: (name, inputs) for index, name, inputs, _ in nodes if name != "DELEGATE"}
    producer = {t: index for index, name, _, outputs in nodes if name != "DELEGATE" for t in outputs}
    delegated = set()
    partitions = [(set(inputs), outputs) for _, name, inputs, outputs in nodes if name == "DELEGATE"]
    for boundary, outputs in partitions:
        pending = list(outputs)
        while pending:  # back from the partition's outputs to its inputs
            index = producer.get(pending.pop())
            if index is None or index in delegated:
                continue
            delegated.add(index)
            pending += [t for t in ops[index][1] if t >= 0 and t not in boundary]
    return {
        "delegated": _counts(ops[i][0] for i in sorted(delegated)),
        "fallback": _counts(name for i, (name, _) in sorted(ops.items()) if i not in delegated),
        "partitions": len(partitions),
        "num_ops": len(ops),
    }


# The GPU delegate's rules (gpu_compatibility.cc), for the ops keras_vit's files hold and
# their close kin; every other op the delegate knows is reported as unchecked, and an op
# it does not know as "Not supported op".
_UNARY = {"ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "LOG", "LOGISTIC", "NEG",
          "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE", "TANH"}
_BINARY = {"ATAN2", "DIV", "EQUAL", "FLOOR_DIV", "FLOOR_MOD", "GREATER", "GREATER_EQUAL",
           "LOGICAL_AND", "LESS", "LESS_EQUAL", "MAXIMUM", "MINIMUM", "NOT_EQUAL", "POW",
           "SQUARED_DIFFERENCE", "SUB"}
_ONE_INPUT = {"QUANTIZE", "RESHAPE", "TILE", "TRANSPOSE"}
_ALWAYS = {"CONCATENATION", "LEAKY_RELU", "PACK", "PRELU", "RELU", "RELU6", "RELU_N1_TO_1",
           "SPLIT", "SPLIT_V"}
_REDUCE = {"REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "SUM"}
_UNCHECKED = {"ADD_N", "AVERAGE_POOL_2D", "CAST", "CUMSUM", "CUSTOM", "DENSIFY",
              "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DYNAMIC_UPDATE_SLICE",
              "EMBEDDING_LOOKUP", "GATHER", "HARD_SWISH", "LSTM", "MAX_POOL_2D", "MIRROR_PAD",
              "ONE_HOT", "PAD", "PADV2", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
              "SELECT", "SELECT_V2", "SPACE_TO_DEPTH", "STABLEHLO_CLAMP", "TRANSPOSE_CONV"}
_SIGN_BIT = 5  # the one fused activation the GPU delegate lacks


class _Op:
    """One op of a TFLite file, as the GPU delegate's check sees it: name, options, its
    inputs and outputs as (dims, type name, constant), optional inputs left out."""

    def __init__(self, model, op, constant, names, types):
        subgraph = model.subgraphs[0]
        self.name = names[op.opcodeIndex]
        self.options = op.builtinOptions

        def spec(t):
            tensor = subgraph.tensors[t]
            return (list(tensor.shape if tensor.shape is not None else []),
                    types[tensor.type], t in constant)

        self.inputs = [spec(t) for t in op.inputs if t >= 0]
        self.outputs = [spec(t) for t in op.outputs]
        self.runtime = sum(not c for _, _, c in self.inputs)
        self.const = len(self.inputs) - self.runtime


def _counts_error(op, runtime, outputs=1, const=None):
    if const is not None and op.const != const:
        return f"Expected {const} const input tensor(s), but node has {op.const} const input(s)."
    if op.runtime != runtime:
        return (f"Expected {runtime} runtime input tensor(s), but node has {op.runtime} "
                "runtime input(s).")
    if len(op.outputs) != outputs:
        return f"Expected {outputs} output tensor(s), but node has {len(op.outputs)} output(s)."
    return None


def _activation_error(options):
    activation = getattr(options, "fusedActivationFunction", 0)
    return "TfLiteFusedActivation.kTfLiteActSignBit" if activation == _SIGN_BIT else None


def _gpu_rule(op):
    """The GPU delegate's reason to refuse `op`, or None where it takes it."""
    name, options, inputs = op.name, op.options, op.inputs
    if name in _ALWAYS:
        return None
    if name in _UNARY:
        return _counts_error(op, 1, const=0)
    if name in _BINARY:
        if _counts_error(op, 2, const=0) and _counts_error(op, 1, const=1):
            return "Op can only handle 1 or 2 operand(s)."
        return _activation_error(options)
    if name in _ONE_INPUT:
        return _counts_error(op, 1)
    if name in ("ADD", "MUL"):
        if len(inputs) != 2:
            return f"{name} requires two input tensors."
        (a, _, _), (b, _, _) = inputs
        if name == "MUL" and len(a) == len(b) and any(x < y for x, y in zip(a, b)) and any(
                y < x for x, y in zip(a, b)):
            return "MUL requires one tensor that not less than second in all dimensions."
        return _activation_error(options)
    if name == "BATCH_MATMUL":
        if len(inputs) != 2 or len(op.outputs) != 1:
            return (f"Expected 2 inputs and 1 output, got: {len(inputs)} inputs and "
                    f"{len(op.outputs)} outputs")
        return None
    if name == "CONV_2D":
        if op.runtime > 2:
            return f"Expected 1 or 2 input tensor(s), but node has {op.runtime} runtime inputs."
        if min(options.strideH, options.strideW, options.dilationHFactor,
               options.dilationWFactor) <= 0:
            return "Incorrect stride or dilation values."
        return _activation_error(options)
    if name == "DEQUANTIZE":
        if len(inputs) != 1 or len(op.outputs) != 1:
            return "Expected 1 input & output each from Dequantize."
        return "Unsupported dequantization type." if inputs[0][1] == "INT16" else None
    if name == "FULLY_CONNECTED":
        if options.weightsFormat != 0:
            return f"Unsupported FullyConnected weights format: {options.weightsFormat}"
        if op.runtime > 2:
            return "FullyConnected doesn't support more than 2 runtime inputs."
        if inputs[0][2]:
            return "FullyConnected doesn't support constant input."
        if options.keepNumDims and len(inputs[0][0]) != len(op.outputs[0][0]):
            return ("Input and output dimensions different and FullyConnected doesn't support "
                    "keep_num_dims.")
        return None
    if name == "MEAN" or name in _REDUCE:
        error = _counts_error(op, 1, const=1 if name == "MEAN" else None)
        if error or len(inputs) < 2:
            return error or f"{name} is only supported with constant axes."
        if not inputs[1][2]:
            return f"{name} is only supported with constant axes."
        return None if inputs[1][1] == "INT32" else (
            f"{name} supports int32 tensor for axes. But node has {inputs[1][1]}")
    if name == "SOFTMAX":
        return None if options.beta == 1 else "Softmax.beta != 1 is not supported."
    if name in ("SLICE", "STRIDED_SLICE"):
        if name == "STRIDED_SLICE":
            for mask, text in (("ellipsisMask", "ellipsis_mask."), ("newAxisMask", "new_axis_mask."),
                               ("shrinkAxisMask", "shrink_axis_mask parameter.")):
                if getattr(options, mask):
                    return f"Slice does not support {text}"
        if len(inputs) < (4 if name == "STRIDED_SLICE" else 3):
            return f"{name} requires {4 if name == 'STRIDED_SLICE' else 3} inputs."
        if len(inputs[0][0]) not in (3, 4):
            return f"{name} supports for 3 or 4 dimensional tensors only."
        return None
    if name in _UNCHECKED:
        return f"keras_vit does not check the GPU delegate's rules for {name}"
    return f"Not supported op {name}"


def _analyzer_warnings(path):
    """[(op index, op name, reason)] that `tf.lite.experimental.Analyzer` prints for the
    file with gpu_compatibility=True (nothing without TensorFlow)."""
    if find_spec("tensorflow") is None:
        return []
    import tensorflow as tf

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=path, gpu_compatibility=True)
    warnings, current = [], None
    for line in text.getvalue().splitlines():
        op = re.match(r"\s+Op#(\d+) (\w+)\(", line)
        if op:
            current = (int(op.group(1)), op.group(2))
        elif line.startswith("GPU COMPATIBILITY WARNING: ") and current is not None:
            warnings.append((*current, line.split(": ", 1)[1].strip()))
    return warnings


def gpu_compatibility(path):
    """The ops of a TFLite file's main graph that LiteRT's GPU delegate would not take.

    Returns a list of dicts (index: the op's position in the file, op: its name, reason:
    the delegate's), empty when every op passes. Constant inputs are tensors with data in
    the file and the float32 outputs of a DEQUANTIZE of one (float16 weights, which the
    delegate reads as constants). Like the delegate's own offline check, this looks at
    each op alone; a file that passes can still fail at run time on a phone's GPU (memory,
    driver, shapes), which only a device run shows.
    """
    from ai_edge_litert import schema_py_generated as schema

    path = _check_file(path)
    with open(path, "rb") as f:
        model = schema.ModelT.InitFromPackedBuf(bytearray(f.read()), 0)
    subgraph = model.subgraphs[0]
    constant = {i for i, t in enumerate(subgraph.tensors) if t.buffer and (
        (model.buffers[t.buffer].data is not None and np.size(model.buffers[t.buffer].data))
        or model.buffers[t.buffer].size)}
    names = op_names(model)
    for op in subgraph.operators:  # a DEQUANTIZE of a constant is a constant (fp16 weights)
        if names[op.opcodeIndex] == "DEQUANTIZE" and all(
                t in constant for t in op.inputs if t >= 0):
            constant.update(op.outputs)
    types = {v: k for k, v in vars(schema.TensorType).items() if k.isupper()}
    found = {}
    for index, op in enumerate(subgraph.operators):
        checked = _Op(model, op, constant, names, types)
        reason = _gpu_rule(checked)
        if reason:
            found[index] = {"index": index, "op": checked.name, "reason": reason}
    for index, name, reason in _analyzer_warnings(path):
        found.setdefault(index, {"index": index, "op": name, "reason": reason})
    return [found[i] for i in sorted(found)]
