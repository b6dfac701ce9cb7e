"""Test helper: answer a TF Serving ``PredictRequest`` by running a SavedModel signature.

The real ``tensorflow_model_server`` cannot be installed here; this is what it
does for the Predict API (look up ``model_spec.signature_name``, feed the named
input tensors, return the named outputs), built on the `tensorflow-serving-api`
protos, so the request/response contract of an export can be tested in-process.

Example:

>>> from tensorflow_serving.apis import predict_pb2                # doctest: +SKIP
>>> request = make_predict_request(images, model_name="aw_resnet50")
>>> response = predict(version_dir, request)
>>> probabilities = tf.make_ndarray(response.outputs["probabilities"])
"""

import numpy as np
import tensorflow as tf


def make_predict_request(images, model_name="model", signature_name="serving_default", input_name="images"):
    """A `predict_pb2.PredictRequest` carrying ``images`` as ``input_name``."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(np.asarray(images)))
    return request


def predict(saved_model, request):
    """Runs ``request`` against ``saved_model`` (a directory or a loaded object)
    and returns a `predict_pb2.PredictResponse`."""
    from tensorflow_serving.apis import predict_pb2

    loaded = tf.saved_model.load(saved_model) if isinstance(saved_model, str) else saved_model
    name = request.model_spec.signature_name or "serving_default"
    if name not in loaded.signatures:
        raise KeyError(f"Signature {name!r} not found; available: {sorted(loaded.signatures)}.")
    function = loaded.signatures[name]
    expected = set(function.structured_input_signature[1])
    given = set(request.inputs)
    if given != expected:
        raise ValueError(f"Request inputs {sorted(given)} do not match the signature's {sorted(expected)}.")
    feeds = {key: tf.constant(tf.make_ndarray(request.inputs[key])) for key in given}
    outputs = function(**feeds)
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for key in request.output_filter or outputs:
        response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
    return response
