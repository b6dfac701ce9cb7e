"""Which operators of a .tflite does XNNPACK take? Partitions and the operators it refuses.

    python benchmarks/xnnpack_delegation.py model.tflite [more.tflite ...]

For each file: the number of XNNPACK partitions of the whole model (1: the whole
graph runs in XNNPACK; each extra partition means operators between them run on
LiteRT's builtin kernels), the operator counts, and every operator XNNPACK does
not take *alone*: each operator is copied into a one-operator model (its constant
inputs kept, the other inputs made model inputs) and loaded with ai_edge_litert;
it is delegated when the interpreter lists a ``DELEGATE`` node. An operator
refused alone splits the graph around it (the usual cause of extra partitions);
the reverse need not hold (context-dependent refusals show only in the partition
count).
"""

import argparse
import collections
import copy
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def load(path):
    """The model of ``path`` in the flatbuffer object API (``ModelT``)."""
    from aw_keras.export.tflite import unpack_model

    with open(path, "rb") as handle:
        return unpack_model(handle.read())[0]


def operator_name(model, operator):
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    code = model.operatorCodes[operator.opcodeIndex]
    return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")


def one_operator_model(model, index):
    """Bytes of a model holding only operator ``index`` of the first subgraph:
    its tensors and the buffers of its constant inputs, nothing else (so that
    it stays small for a large model)."""
    from aw_keras.export.tflite import pack_model

    schema = _schema()
    subgraph = model.subgraphs[0]
    operator = subgraph.operators[index]
    tensors, buffers, remap, inputs = [], [schema.BufferT()], {}, []
    for t in [t for t in list(operator.inputs) + list(operator.outputs) if t >= 0]:
        if t in remap:
            continue
        tensor = copy.copy(subgraph.tensors[t])
        data = model.buffers[tensor.buffer].data
        constant = data is not None and len(data) > 0
        buffers.append(model.buffers[tensor.buffer] if constant else schema.BufferT())
        tensor.buffer = len(buffers) - 1
        remap[t] = len(tensors)
        tensors.append(tensor)
        if not constant and t in operator.inputs:
            inputs.append(remap[t])
    single_operator = copy.copy(operator)
    single_operator.inputs = [remap[t] if t >= 0 else -1 for t in operator.inputs]
    single_operator.outputs = [remap[t] for t in operator.outputs]
    single_operator.intermediates = []
    sub = schema.SubGraphT()
    sub.tensors, sub.operators = tensors, [single_operator]
    sub.inputs, sub.outputs = inputs, list(single_operator.outputs)
    single = copy.copy(model)
    single.subgraphs, single.buffers = [sub], buffers
    single.signatureDefs, single.metadata, single.metadataBuffer = [], [], []
    return pack_model(single)


def _partitions(**source):
    from ai_edge_litert.interpreter import Interpreter

    from aw_keras.export.tflite import xnnpack_partitions

    interpreter = Interpreter(num_threads=1, **source)
    interpreter.allocate_tensors()
    return xnnpack_partitions(interpreter)


def report(path):
    """{"partitions", "operators": Counter, "refused": Counter, "examples": {op: [...]}}."""
    model = load(path)
    subgraph = model.subgraphs[0]
    operators, refused, examples = collections.Counter(), collections.Counter(), {}
    for index, operator in enumerate(subgraph.operators):
        name = operator_name(model, operator)
        operators[name] += 1
        try:
            delegated = _partitions(model_content=one_operator_model(model, index)) > 0
        except (RuntimeError, ValueError):
            delegated = False
        if not delegated:
            refused[name] += 1
            tensor = subgraph.tensors[operator.outputs[0]]
            shape = [int(v) for v in subgraph.tensors[operator.inputs[0]].shape]
            examples.setdefault(name, []).append(
                f"#{index} {tensor.name.decode(errors='replace')} (input {shape})")
    return {"partitions": _partitions(model_path=os.fspath(path)), "operators": operators,
            "refused": refused, "examples": examples}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help=".tflite files")
    parser.add_argument("--examples", type=int, default=3,
                        help="refused operators listed per operator type")
    args = parser.parse_args(argv)
    missing = [path for path in args.models if not os.path.isfile(path)]
    if missing:
        parser.error(f"models: no such file {missing[0]!r}")
    for path in args.models:
        result = report(path)
        print(f"## {path}: {result['partitions']} XNNPACK partition(s), "
              f"{sum(result['operators'].values())} operators")
        print("operators: " + ", ".join(f"{k} {v}" for k, v in result["operators"].most_common()))
        refused = result["refused"]
        print("refused alone: " + (", ".join(f"{k} {v}" for k, v in refused.most_common())
                                   or "none"))
        for name, shown in result["examples"].items():
            for line in shown[: args.examples]:
                print(f"  {name} {line}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
