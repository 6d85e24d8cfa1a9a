"""Recipe: top-1 / top-5 accuracy of a preset on the ImageNet validation set (TFDS).

    python -m recipes.imagenet_eval --preset b16 --manual-dir ~/imagenet

TFDS `imagenet2012` can't download ImageNet: put ILSVRC2012_img_val.tar (and
ILSVRC2012_img_train.tar, which TFDS also wants to prepare the dataset) in --manual-dir.
Images are resized to the model's size with no crop, as vit_jax evaluates
(--crop-fraction 0.875 resizes the short side to size / 0.875 then center-crops, as timm).
"""

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras

from keras_vit import data as vit_data
from keras_vit.model import ViT
from recipes import options, reports, run_folder


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="b16")
    p.add_argument("--weights", default="default", help="weights name, path or URL")
    p.add_argument("--image-size", type=options.positive_int, default=None,
                   help="default: the weights' size")
    p.add_argument("--dataset", default="imagenet2012")
    p.add_argument("--split", default="validation")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir")
    p.add_argument("--manual-dir", default=None, help="folder with the ImageNet tar files")
    p.add_argument("--batch-size", type=options.positive_int, default=64)
    p.add_argument("--crop-fraction", default=1.0,
                   type=options.checked_number(float, "a fraction in (0, 1]", lambda v: 0 < v <= 1))
    p.add_argument("--limit", type=options.positive_int, default=None,
                   help="evaluate only this many images")
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--output", default=None, help="write the results to this JSON file")
    p.add_argument("--model", type=options.model_override, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a model argument (with --weights none, for tests)")
    return p.parse_args(argv)


def main(argv=None):
    start = time.time()
    args = parse_args(argv)
    if args.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    overrides = dict(args.model)
    if args.image_size:
        overrides["image_size"] = args.image_size
    weights = None if str(args.weights).lower() == "none" else args.weights
    model = ViT.from_preset(args.preset, weights=weights, **overrides)
    dataset, info = vit_data.from_tfds(
        args.dataset, args.split, data_dir=args.data_dir, manual_dir=args.manual_dir)
    if args.limit:
        dataset = dataset.take(args.limit)
    num_classes = info.features["label"].num_classes
    if num_classes != model.num_classes:
        raise ValueError(
            f"{args.dataset} has {num_classes} classes but the model predicts {model.num_classes}.")
    size = model.image_size
    if args.crop_fraction < 1.0:
        tf = vit_data.require_tensorflow()
        resize = [int(round(s / args.crop_fraction)) for s in size]

        def crop(image, label):
            image = tf.image.resize(tf.cast(image, tf.float32), resize)
            return tf.image.resize_with_crop_or_pad(image, *size), label

        dataset = dataset.map(crop)
    pipeline = vit_data.build_pipeline(
        dataset, training=False, batch_size=args.batch_size, num_classes=num_classes,
        image_size=size, num_channels=model.num_channels, cache=False)
    model.compile(metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                           keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    results = model.evaluate(pipeline, return_dict=True, verbose=1)
    summary = {"preset": args.preset, "weights": args.weights, "image_size": list(size),
               "top1": results["top1"], "top5": results["top5"],
               "images": vit_data.dataset_size(dataset), "seconds": round(time.time() - start, 1)}
    if args.output:
        run_folder.write_json(args.output, summary)
    reports.banner([f"{args.preset} ({args.weights}) on {args.dataset}/{args.split}: "
                   f"top-1 {summary['top1']:.2%}, top-5 {summary['top5']:.2%} "
                   f"({summary['images']} images)"]
                  + ([f"results: {args.output}"] if args.output else []))
    return summary


if __name__ == "__main__":
    main()
