"""A pass over a converted int8 TFLite flatbuffer that lets XNNPACK take more of its ops,
and `probability_products`, the attention products of softmax probabilities and values
(benchmarks/int8_variants.py keeps them float in one variant, what "matmul_int8" did before
it traced the "integer_exp" graph form).

XNNPACK's int8 kernels refuse two things TFLite's calibration produces:
- a `BATCH_MATMUL` whose right-hand operand has a zero point other than 0: every attention
  product then ran in TFLite's own, much slower int8 kernel (docs/speed.md);
- a `CONCATENATION` whose inputs have different ranges (the heads before the output
  projection).
`xnnpack_ranges` re-expresses those tensors' ranges: a right-hand operand gets the
symmetric range of the same span, a concatenated input the output's range (which covers
it). Only where the op that makes the tensor requantizes to any output range anyway (a
matmul, an addition...), directly or through layout ops that feed nothing else, and every
op that reads it reads its parameters: the function is unchanged up to rounding.
"""

import numpy as np

# Ops whose int8 kernels requantize their output to the output tensor's own parameters.
_REQUANTIZING = {"FULLY_CONNECTED", "CONV_2D", "ADD", "SUB", "MUL", "BATCH_MATMUL"}
# Ops whose int8 kernels read each input's own parameters.
_PARAMETER_READING = _REQUANTIZING | {"SOFTMAX", "DEQUANTIZE", "QUANTIZE", "CONCATENATION"}
# Layout ops: their int8 kernels copy bytes, so input and output share their parameters.
_LAYOUT = {"RESHAPE", "TRANSPOSE", "EXPAND_DIMS", "SQUEEZE"}


def xnnpack_ranges(flatbuffer):
    """Returns (bytes, {"matmul_operands": n, "concatenated_inputs": m}): `flatbuffer`
    (a TFLite model's bytes) with the ranges described in the module docstring moved, and
    how many tensors (or chains of them) were moved."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    names = op_names(model)
    moved = {"matmul_operands": 0, "concatenated_inputs": 0}
    for graph in model.subgraphs:
        producers, consumers = {}, {}
        for op in graph.operators:
            name = names[op.opcodeIndex]
            for t in op.outputs:
                producers[t] = (name, op.inputs[0] if len(op.inputs) else -1)
            for t in op.inputs:
                consumers.setdefault(t, []).append(name)
        for op in graph.operators:
            name = names[op.opcodeIndex]
            if name == "BATCH_MATMUL":
                chain = _movable_chain(graph, op.inputs[1], producers, consumers)
                if chain is not None and _parameters(graph.tensors[chain[0]])[1] != 0:
                    scale, zero_point = _parameters(graph.tensors[chain[0]])
                    span = max(-128 - zero_point, 127 - zero_point, key=abs) * scale
                    _set_parameters(graph, chain, abs(span) / 127.0, 0)
                    moved["matmul_operands"] += 1
            elif name == "CONCATENATION" and _per_tensor_int8(graph.tensors[op.outputs[0]]):
                scale, zero_point = _parameters(graph.tensors[op.outputs[0]])
                for t in op.inputs:
                    chain = _movable_chain(graph, t, producers, consumers)
                    if chain is not None and _parameters(graph.tensors[t]) != (scale, zero_point):
                        _set_parameters(graph, chain, scale, zero_point)
                        moved["concatenated_inputs"] += 1
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), moved


def probability_products(flatbuffer):
    """The output tensor names of a TFLite model's BATCH_MATMULs whose left operand is a
    SOFTMAX's output (directly or through layout ops): the attention products of
    probabilities and values. In int8 they cost DINOv2-S/14's features more than all the
    other matmuls together (benchmarks/RESULTS.md): probabilities over a few hundred tokens
    share one int8 scale, and most are below one step."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    names = op_names(model)
    graph = model.subgraphs[0]
    producers = {t: op for op in graph.operators for t in op.outputs}

    def from_softmax(tensor):
        while tensor in producers:
            name = names[producers[tensor].opcodeIndex]
            if name == "SOFTMAX":
                return True
            if name not in _LAYOUT:
                return False
            tensor = producers[tensor].inputs[0]
        return False

    return [graph.tensors[op.outputs[0]].name.decode() for op in graph.operators
            if names[op.opcodeIndex] == "BATCH_MATMUL" and from_softmax(op.inputs[0])]


def op_names(model):
    """[builtin op name] of a TFLite `ModelT`, one per entry of its `operatorCodes` (an op's
    name is `op_names(model)[op.opcodeIndex]`)."""
    from ai_edge_litert import schema_py_generated as schema

    by_code = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    return [by_code[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in model.operatorCodes]


def _per_tensor_int8(tensor):
    from ai_edge_litert import schema_py_generated as schema

    q = tensor.quantization
    return (tensor.type == schema.TensorType.INT8 and q is not None and q.scale is not None
            and len(q.scale) == 1)


def _parameters(tensor):
    q = tensor.quantization
    return float(q.scale[0]), int(q.zeroPoint[0])


def _set_parameters(graph, chain, scale, zero_point):
    for index in chain:
        q = graph.tensors[index].quantization
        q.scale = np.asarray([scale], dtype=np.float32)
        q.zeroPoint = np.asarray([zero_point], dtype=np.int64)
        q.min = q.max = None


def _movable_chain(graph, index, producers, consumers):
    """The tensors from `index` back through layout ops to the requantizing op that makes
    them, if their range can move: per-tensor int8, each earlier tensor feeding only the
    next layout op, and every op reading `index` reading its parameters; else None."""
    if not _per_tensor_int8(graph.tensors[index]):
        return None
    chain = [index]
    while True:
        name, source = producers.get(chain[-1], (None, -1))
        if name in _REQUANTIZING:
            break
        if name not in _LAYOUT or len(consumers[source]) != 1:
            return None
        chain.append(source)
    return chain if set(consumers[index]) <= _PARAMETER_READING else None
