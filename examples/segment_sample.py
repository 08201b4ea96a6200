"""Segment the bundled immunohistochemistry sample and write the results.

Writes, into the output folder: ``labels.tif`` (the label image, ids intact),
``overlay.png`` (labels over the image), ``config.toml`` (every setting of the run, the
seed included) and ``model.pt`` (weights + configuration, reloadable with
``Segmenter.load``). Existing files are never replaced unless ``--overwrite`` is given.

    python examples/segment_sample.py --output demo-output
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_kanezaki import Segmenter, SPConfig, STConfig
from napari_kanezaki.io import save_labels, save_overlay
from napari_kanezaki.samples import immunohistochemistry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", type=Path, default=Path("demo-output"),
                        help="folder for the results (default: demo-output)")
    parser.add_argument("--method", choices=["sp", "st"], default="sp",
                        help="sp: superpixel refinement (ICASSP 2018); st: similarity + "
                        "continuity (TIP 2020). Default: sp")
    parser.add_argument("--max-iter", type=int, default=200,
                        help="training iterations (paper: 1000; default 200 is plenty here)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args()

    image = immunohistochemistry(256)
    config = (SPConfig if args.method == "sp" else STConfig)(max_iter=args.max_iter)
    segmenter = Segmenter(config, device=args.device, seed=args.seed)
    out = args.output
    targets = [out / name for name in ("labels.tif", "overlay.png", "config.toml", "model.pt")]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.overwrite:
        parser.error(f"{', '.join(existing)} already exist; use --overwrite or another --output.")
    out.mkdir(parents=True, exist_ok=True)

    print(f"{args.method.upper()} on a {image.shape[0]}x{image.shape[1]} RGB sample, "
          f"device {segmenter.device}, seed {args.seed}")
    start = time.perf_counter()
    for state in segmenter.run(image):
        if state.iteration % 25 == 0 or state.done:
            print(f"  iteration {state.iteration:4d}  loss {state.loss:.4f}  labels {state.n_labels}")
    labels = segmenter.predict(image)
    print(f"stopped ({state.stop_reason}) after {time.perf_counter() - start:.1f} s with "
          f"{labels.max()} segments")

    save_labels(targets[0], labels, overwrite=args.overwrite)
    save_overlay(targets[1], image, labels, overwrite=args.overwrite)
    config.to_file(targets[2], overwrite=args.overwrite)
    with targets[2].open("a", encoding="utf-8") as f:
        f.write(f"\n# run: seed = {args.seed}, device = \"{segmenter.device}\"\n")
    segmenter.save(targets[3], overwrite=args.overwrite)
    for path in targets:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
