"""Command line: `python -m training {train,export,list}`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from modelrepo.layout import RepositoryError
from training.config import ConfigError, TrainConfig, read_config_file, resolve_config

DEFAULTS = TrainConfig()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train image and text classifiers; export them to the ONNX model repository.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a model and write checkpoint, metrics and reports",
        description="Train a model. Settings come from defaults, then --config, then flags.",
    )
    # Flags default to None so that only the flags actually given override the config file;
    # the help text shows the real defaults.
    train.add_argument("--config", type=Path, help="a .toml or .json file of settings")
    train.add_argument("--arch", help=f"architecture (default {DEFAULTS.arch}); see `list`")
    train.add_argument(
        "--dataset",
        help=f"data set (default {DEFAULTS.dataset}) or, for text models, a .csv file; see `list`",
    )
    train.add_argument(
        "--data-dir",
        help="folder with the data set's files (default ./data); a relative --dataset .csv "
        "is looked for in it when given",
    )
    train.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="fetch missing data set files from their official location",
    )
    train.add_argument("--epochs", type=int, help=f"default {DEFAULTS.epochs}")
    train.add_argument("--batch-size", type=int, help=f"default {DEFAULTS.batch_size}")
    train.add_argument("--lr", type=float, help=f"Adam learning rate (default {DEFAULTS.lr})")
    train.add_argument("--weight-decay", type=float, help=f"default {DEFAULTS.weight_decay}")
    train.add_argument("--limit", type=int, help="use only N training samples")
    train.add_argument("--seed", type=int, help=f"default {DEFAULTS.seed}")
    train.add_argument(
        "--augment",
        help="comma-separated: crop,flip,affine,stroke; 'none' for none (default: the "
        "architecture's own)",
    )
    train.add_argument(
        "--canonical",
        choices=("none", "digits"),
        help="digit data sets: bring every image to MNIST's form (cropped to the ink, scaled "
        "to 20 px, centred by mass), as the served model will (default: digits for mnist-5k, "
        "none otherwise)",
    )
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    train.add_argument(
        "--max-length",
        type=int,
        help=f"text: token ids per sequence (default {DEFAULTS.max_length})",
    )
    train.add_argument(
        "--vocab-size",
        type=int,
        help=f"text: largest vocabulary, 3 special tokens included (default {DEFAULTS.vocab_size})",
    )
    train.add_argument(
        "--min-count",
        type=int,
        help=f"text: fewest occurrences for a word to get an id (default {DEFAULTS.min_count})",
    )
    train.add_argument("--out", help="output folder (default runs/<arch>-<dataset>)")
    train.add_argument("--force", action="store_true", help="overwrite a run in --out")

    export = sub.add_parser(
        "export",
        help="export a checkpoint to exports/<name>/<next version>/",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    export.add_argument("checkpoint", type=Path, help="checkpoint.pt written by `train`")
    export.add_argument("--name", required=True, help="model name in the repository")
    export.add_argument("--repo", type=Path, default=Path("exports"), help="model repository")

    sub.add_parser("list", help="list architectures and data sets")
    return parser


def _train_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        key: getattr(args, key)
        for key in (
            "arch",
            "dataset",
            "data_dir",
            "download",
            "epochs",
            "batch_size",
            "lr",
            "weight_decay",
            "limit",
            "seed",
            "threads",
            "out",
            "max_length",
            "vocab_size",
            "min_count",
            "canonical",
        )
    }
    if args.augment is not None:
        flags["augment"] = [] if args.augment == "none" else args.augment.split(",")
    return flags


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Imported here so `--help` and `list` answer at once, before torch loads.
    from training.checkpoint import CheckpointError
    from training.data import DATASETS, TEXT_DATASETS, DatasetError
    from training.export import ExportError
    from training.models import architectures

    try:
        if args.command == "list":
            print("architectures:", ", ".join(architectures()))
            print("datasets:     ", ", ".join(DATASETS))
            print("text datasets:", ", ".join(TEXT_DATASETS), "(or the path of a .csv file)")
        elif args.command == "train":
            from training.train import run_training

            file_values = read_config_file(args.config) if args.config else {}
            config = resolve_config(file_values, _train_flags(args))
            run_training(config, force=args.force)
        else:
            from training.export import export_checkpoint

            export_checkpoint(args.checkpoint, args.name, args.repo)
    except (ConfigError, DatasetError, CheckpointError, ExportError, RepositoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
