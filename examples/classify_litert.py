#!/usr/bin/env python3
"""Classify one image with an exported keras_vit TFLite file, using only ai-edge-litert and numpy.

This is what runs on a Raspberry Pi (`pip install ai-edge-litert numpy`): no TensorFlow, no
Keras, no keras_vit.

    python classify_litert.py model_matmul_int8.tflite shirt.pgm --labels labels.txt --top 3

Images: .npy (H x W or H x W x C, pixel values 0..255) and binary PGM/PPM (P5/P6) are read
with numpy alone; PNG, JPEG and the rest need Pillow (`pip install pillow`), used only if
it is installed. The image is resized (nearest neighbour) to the model's input size and
converted to its channel count. The file takes raw 0..255 pixels (the model rescales them
itself): float32, float16, dynamic, mixed_int8 and matmul_int8 files take them as float32; full int8
files take uint8 (or int8) values, quantized with the input tensor's scale and zero point
(for keras_vit exports, scale 1 and zero point 0: the raw pixels).
"""

import argparse
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def read_image(path):
    """An (H, W, C) uint8 array from a .npy, binary PGM/PPM or (with Pillow) any image file."""
    if path.endswith(".npy"):
        image = np.load(path)
    elif path.endswith((".pgm", ".ppm", ".pnm")):
        with open(path, "rb") as f:
            data = f.read()
        # Header: magic, width, height, maxval, separated by whitespace; comments start with #.
        fields, pos = [], 0
        while len(fields) < 4:
            while data[pos : pos + 1].isspace():
                pos += 1
            if data[pos : pos + 1] == b"#":
                pos = data.index(b"\n", pos) + 1
                continue
            end = pos
            while not data[end : end + 1].isspace():
                end += 1
            fields.append(data[pos:end])
            pos = end
        magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
        if magic not in (b"P5", b"P6") or maxval > 255:
            raise ValueError(f"{path}: only 8-bit binary PGM (P5) / PPM (P6) files are supported.")
        channels = 1 if magic == b"P5" else 3
        image = np.frombuffer(data, np.uint8, height * width * channels, pos + 1)
        image = image.reshape(height, width, channels)
    else:
        from PIL import Image  # optional

        image = np.asarray(Image.open(path))
    image = np.asarray(image)
    return image[..., None] if image.ndim == 2 else image


def fit_image(image, height, width, channels):
    """Nearest-neighbour resize to (height, width) and convert to `channels` channels."""
    rows = (np.arange(height) * image.shape[0] / height).astype(int)
    cols = (np.arange(width) * image.shape[1] / width).astype(int)
    image = image[rows][:, cols].astype(np.float32)
    if image.shape[-1] == 4:  # drop alpha
        image = image[..., :3]
    if image.shape[-1] == 3 and channels == 1:
        image = image @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    elif image.shape[-1] == 1 and channels == 3:
        image = np.repeat(image, 3, axis=-1)
    return image


def classify(model_path, image, num_threads=2):
    """Returns (logits (num_classes,), seconds for one inference)."""
    interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    _, height, width, channels = inp["shape"]
    x = fit_image(image, height, width, channels)[None]
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero_point = inp["quantization"]
        if scale:
            x = x / scale + zero_point
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x), info.min, info.max)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    start = time.perf_counter()
    interpreter.invoke()
    seconds = time.perf_counter() - start
    logits = interpreter.get_tensor(out["index"])[0].astype(np.float32)
    scale, zero_point = out["quantization"]
    if scale:  # a quantized output
        logits = (logits - zero_point) * scale
    return logits, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .tflite file exported by keras_vit")
    parser.add_argument("image", help=".npy, .pgm/.ppm, or (with Pillow) .png/.jpg")
    parser.add_argument("--labels", help="a text file with one class name per line")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    logits, seconds = classify(args.model, read_image(args.image), args.threads)
    labels = None
    if args.labels:
        with open(args.labels) as f:
            labels = [line.strip() for line in f if line.strip()]
    if logits.min() >= 0 and abs(logits.sum() - 1) < 1e-3:  # a softmax head already
        probabilities = logits
    else:
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
    for index in np.argsort(-logits)[: args.top]:
        name = labels[index] if labels else f"class {index}"
        print(f"{name:>20s}  {100 * probabilities[index]:6.2f} %")
    print(f"({1000 * seconds:.2f} ms)")


if __name__ == "__main__":
    main()
