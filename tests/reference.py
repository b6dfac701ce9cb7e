"""A literal NumPy implementation of AW-convolution (paper Eq. 4, 5, 7, 8).

Written for clarity, not speed: explicit loops over samples, output positions
and kernel taps, the paper's (C2, C1, h, w) kernel layout and the PyTorch
reshape/expand of Eq. 8. It is the oracle every AWConv2D strategy is tested
against.
"""

import math

import keras
import numpy as np


def adaptive_avg_pool(x, out_h, out_w):
    """PyTorch AdaptiveAvgPool2d on NHWC: bins [floor(i*H/oh), ceil((i+1)*H/oh))."""
    n, height, width, channels = x.shape
    out = np.zeros((n, out_h, out_w, channels), dtype=np.float64)
    for i in range(out_h):
        h0, h1 = math.floor(i * height / out_h), math.ceil((i + 1) * height / out_h)
        for j in range(out_w):
            w0, w1 = math.floor(j * width / out_w), math.ceil((j + 1) * width / out_w)
            out[:, i, j, :] = x[:, h0:h1, w0:w1, :].mean(axis=(1, 2))
    return out


def batch_norm(x, bn, training):
    """Keras BatchNormalization over all axes but the last."""
    if training:
        mean = x.mean(axis=(0, 1, 2))
        var = x.var(axis=(0, 1, 2))
    else:
        mean, var = bn["moving_mean"], bn["moving_variance"]
    return bn["gamma"] * (x - mean) / np.sqrt(var + bn["epsilon"]) + bn["beta"]


def attention_maps(x, weights, config, training):
    """F1 (Eq. 7) and Expand (Eq. 8): A with the paper's shape (N, C2, C1, h, w)."""
    kh, kw = config["kernel_size"]
    r_hw = config["spatial_reduction"]
    c1 = x.shape[-1]
    c2 = config["filters"]
    r_c1 = config["input_channel_reduction"] or c1
    r_c2 = config["output_channel_reduction"]
    a0 = adaptive_avg_pool(x, kh // r_hw, kw // r_hw)  # Avgpool2d
    a1 = np.einsum("nhwc,cd->nhwd", a0, weights["squeeze_kernel"])  # Pointconv1
    a1 = np.maximum(batch_norm(a1, weights["squeeze_bn"], training), 0.0)
    a2 = np.einsum("nhwc,cd->nhwd", a1, weights["excite_kernel"])  # Pointconv2
    a2 = 1.0 / (1.0 + np.exp(-batch_norm(a2, weights["excite_bn"], training)))
    n = x.shape[0]
    # Eq. 8 in the paper's layout: A2 (N, C2/r_C2 * C1/r_C1, h', w') ->
    # reshape (N, C2/r_C2, C1/r_C1, h', w'), then every group is expanded.
    a2_nchw = np.transpose(a2, (0, 3, 1, 2))
    grouped = a2_nchw.reshape(n, c2 // r_c2, c1 // r_c1, kh // r_hw, kw // r_hw)
    a = np.zeros((n, c2, c1, kh, kw))
    for l in range(n):
        for p in range(c2):
            for o in range(c1):
                for j in range(kh):
                    for k in range(kw):
                        a[l, p, o, j, k] = grouped[l, p // r_c2, o // r_c1, j // r_hw, k // r_hw]
    return a


def same_pad_before(size, kernel, stride, dilation):
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, out


def aw_conv2d(x, weights, config, training=False):
    """O[l, p, m, n] = sum_{o, j, k} I[l, o, m', n'] * AK[l, p, o, j, k] (Eq. 5), NHWC out."""
    x = np.asarray(x, dtype=np.float64)
    kh, kw = config["kernel_size"]
    sh, sw = config["strides"]
    dh, dw = config["dilation_rate"]
    n, height, width, c1 = x.shape
    c2 = config["filters"]
    a = attention_maps(x, weights, config, training)
    kernel = np.transpose(weights["kernel"], (3, 2, 0, 1))  # (C2, C1, h, w)
    if config["attention_mode"] == "residual":
        ak = kernel[None] + a * kernel[None]  # F2: AK = K + A (.) K (Eq. 6)
    else:
        ak = a * kernel[None]
    if config["padding"] == "same":
        top, out_h = same_pad_before(height, kh, sh, dh)
        left, out_w = same_pad_before(width, kw, sw, dw)
    else:
        top = left = 0
        out_h = (height - (kh - 1) * dh - 1) // sh + 1
        out_w = (width - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, out_h, out_w, c2))
    for l in range(n):
        for m in range(out_h):
            for q in range(out_w):
                for j in range(kh):
                    row = m * sh - top + j * dh
                    if not 0 <= row < height:
                        continue  # zero padding
                    for k in range(kw):
                        col = q * sw - left + k * dw
                        if not 0 <= col < width:
                            continue
                        # sum over input channels o for every output channel p
                        out[l, m, q, :] += ak[l, :, :, j, k] @ x[l, row, col, :]
    if weights.get("bias") is not None:
        out += weights["bias"]
    activation = config.get("activation", "linear")
    if activation == "relu":
        out = np.maximum(out, 0.0)
    elif activation not in ("linear", None):
        raise NotImplementedError(f"reference has no activation {activation!r}")
    return out


def _float64(variable):
    """A Keras variable's value as a float64 NumPy array, on any backend."""
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def layer_weights(layer):
    """The AWConv2D weights as NumPy arrays, in the dict `aw_conv2d` reads."""

    def bn(layer_bn):
        return {
            "gamma": _float64(layer_bn.gamma),
            "beta": _float64(layer_bn.beta),
            "moving_mean": _float64(layer_bn.moving_mean),
            "moving_variance": _float64(layer_bn.moving_variance),
            "epsilon": layer_bn.epsilon,
        }

    return {
        "kernel": _float64(layer.kernel),
        "bias": None if layer.bias is None else _float64(layer.bias),
        "squeeze_kernel": _float64(layer.squeeze_conv.kernel)[0, 0],
        "excite_kernel": _float64(layer.excite_conv.kernel)[0, 0],
        "squeeze_bn": bn(layer.squeeze_bn),
        "excite_bn": bn(layer.excite_bn),
    }
