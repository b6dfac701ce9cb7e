"""Operator-by-operator latency of .tflite models, and where one model's extra time goes.

    python benchmarks/op_profile.py aw.tflite [--against plain.tflite] [--repeats 30]

ai_edge_litert's Python API has no op profiler, so each operator is timed
*alone*: copied into a one-operator model (`xnnpack_delegation.one_operator_model`:
its tensors and constant buffers only), loaded with ai_edge_litert (XNNPACK,
``--threads`` threads), fed the values it sees in the whole model for one real
input (captured once with the reference kernels and all tensors preserved), and
invoked ``--repeats`` times; the median is its time. Printed:

- the whole model's latency (median, interleaved with ``--against``), the sum of
  its operators' times, and the per-call floor (the fastest one-operator model:
  the Python and invoke overhead every one-operator timing carries);
- a table by operator type: count and milliseconds of each model, the
  difference, and the share of the whole difference;
- the ``--top`` most expensive operator groups by layer (the tensor-name prefix
  up to ``--layer-depth`` path parts), with the operator types inside.

Operators alone run without the cross-operator effects of the whole graph
(caches, XNNPACK fusing a ReLU or a layout change into its neighbour), so the
sum differs from the whole model's latency; both are printed, and the table is
read as "which operators carry the extra time", not as exact milliseconds.
"""

import argparse
import collections
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import time_interleaved  # noqa: E402
from xnnpack_delegation import load, one_operator_model, operator_name  # noqa: E402


def captured_tensors(path, sample):
    """{tensor index: value} of every tensor of the first subgraph for ``sample``,
    run with LiteRT's reference kernels and all tensors preserved."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=os.fspath(path), num_threads=1, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], sample.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], sample.astype(detail["dtype"]))
    interpreter.invoke()
    values = {}
    for tensor in interpreter.get_tensor_details():
        try:
            values[tensor["index"]] = interpreter.get_tensor(tensor["index"])
        except ValueError:  # a tensor without data (e.g. an unused optional input)
            pass
    return values


def model_input(path, seed=0):
    """One input of ``path``'s input type and shape (batch 1), uniform over its range."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=os.fspath(path)).get_input_details()[0]
    shape = [1] + [int(v) for v in detail["shape"][1:]]
    rng = np.random.default_rng(seed)
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def time_operators(path, sample, repeats, threads):
    """[(operator index, type, output tensor name, median seconds)] for every
    operator of ``path``'s first subgraph, each timed alone."""
    from ai_edge_litert.interpreter import Interpreter

    model = load(path)
    subgraph = model.subgraphs[0]
    values = captured_tensors(path, sample)
    rows = []
    for index, operator in enumerate(subgraph.operators):
        interpreter = Interpreter(model_content=one_operator_model(model, index),
                                  num_threads=threads)
        interpreter.allocate_tensors()
        originals = [t for t in operator.inputs if t >= 0 and t in values
                     and not _constant(model, subgraph, t)]
        for detail, original in zip(interpreter.get_input_details(), originals):
            interpreter.set_tensor(detail["index"], values[original])
        for _ in range(2):
            interpreter.invoke()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            interpreter.invoke()
            samples.append(time.perf_counter() - start)
        name = subgraph.tensors[operator.outputs[0]].name.decode(errors="replace")
        rows.append((index, operator_name(model, operator), name, statistics.median(samples)))
    return rows


def _constant(model, subgraph, tensor):
    data = model.buffers[subgraph.tensors[tensor].buffer].data
    return data is not None and len(data) > 0


def layer_of(tensor_name, depth):
    """The layer an operator belongs to: its output name's first ``depth`` path
    parts after the model scope (``functional_1/conv2_block1_2_conv/...``)."""
    parts = tensor_name.split(";")[0].split("/")
    return "/".join(parts[1 : 1 + depth]) if len(parts) > 1 else parts[0]


def whole_model_latency(paths, sample_of, repeats, threads):
    from aw_keras.export.verify import TFLiteRunner

    runners = {path: TFLiteRunner(path, num_threads=threads) for path in paths}
    return time_interleaved({path: (lambda r=r, p=path: r(sample_of[p]))
                             for path, r in runners.items()}, repeats=repeats, warmup=3)


def print_profile(main, against, rows, whole, top, depth):
    by_type = {path: collections.defaultdict(lambda: [0, 0.0]) for path in rows}
    for path, timed in rows.items():
        for _, kind, _, seconds in timed:
            by_type[path][kind][0] += 1
            by_type[path][kind][1] += seconds
    floor = min(seconds for timed in rows.values() for *_, seconds in timed)
    for path, timed in rows.items():
        total = sum(seconds for *_, seconds in timed)
        print(f"- {path}: whole model {1000 * whole[path]:.2f} ms; {len(timed)} operators "
              f"alone sum to {1000 * total:.2f} ms ({1000 * (total - floor * len(timed)):.2f} ms "
              f"above the per-call floor of {1e6 * floor:.1f} us)")
    print()
    kinds = sorted(set().union(*[set(t) for t in by_type.values()]),
                   key=lambda k: -by_type[main][k][1] if k in by_type[main] else 0)
    if against is None:
        print("| operator | count | ms |")
        print("|---|---:|---:|")
        for kind in kinds:
            count, seconds = by_type[main][kind]
            print(f"| {kind} | {count} | {1000 * seconds:.3f} |")
    else:
        difference = (sum(s for *_, s in rows[main]) - sum(s for *_, s in rows[against]))
        print("| operator | count | ms | count (against) | ms (against) | difference ms | share |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for kind in kinds:
            count, seconds = by_type[main].get(kind, (0, 0.0))
            base_count, base_seconds = by_type[against].get(kind, (0, 0.0))
            extra = seconds - base_seconds
            share = extra / difference if difference else float("nan")
            print(f"| {kind} | {count} | {1000 * seconds:.3f} | {base_count} | "
                  f"{1000 * base_seconds:.3f} | {1000 * extra:+.3f} | {100 * share:.0f} % |")
    print()
    groups = collections.defaultdict(lambda: [0.0, collections.Counter()])
    for _, kind, name, seconds in rows[main]:
        group = groups[layer_of(name, depth)]
        group[0] += seconds
        group[1][kind] += 1
    print(f"Top {top} layers of {main}:")
    print()
    print("| layer | ms | operators |")
    print("|---|---:|---|")
    for layer, (seconds, kinds_in) in sorted(groups.items(), key=lambda g: -g[1][0])[:top]:
        shown = ", ".join(f"{k} {v}" for k, v in kinds_in.most_common())
        print(f"| {layer} | {1000 * seconds:.3f} | {shown} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the .tflite to profile")
    parser.add_argument("--against", help="a second .tflite (e.g. the plain model) to compare with")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per operator")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=12, help="layers listed")
    parser.add_argument("--layer-depth", type=int, default=1,
                        help="tensor-name path parts that name a layer")
    args = parser.parse_args(argv)
    paths = [args.model] + ([args.against] if args.against else [])
    for path in paths:
        if not os.path.isfile(path):
            parser.error(f"no such file {path!r}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, received {args.repeats}")
    sample_of = {path: model_input(path) for path in paths}
    rows = {}
    for path in paths:
        rows[path] = time_operators(path, sample_of[path], args.repeats, args.threads)
        print(f"timed {len(rows[path])} operators of {path}", file=sys.stderr, flush=True)
    whole = whole_model_latency(paths, sample_of, max(args.repeats, 10), args.threads)
    print_profile(args.model, args.against, rows, whole, args.top, args.layer_depth)


if __name__ == "__main__":
    main()
