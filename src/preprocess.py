"""DVC stage `preprocess`: parse IDX, scale to [0, 1), split off validation, save .npz."""

from pathlib import Path

from omegaconf import DictConfig

from bnn.core import hydra_entry
from bnn.data.dataset import read_pair, save_split, scale_pixels, split_validation


@hydra_entry.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    raw, files = Path(cfg.paths.raw), cfg.data.files
    train = read_pair(raw / files.train_images.name, raw / files.train_labels.name)
    test = read_pair(raw / files.test_images.name, raw / files.test_labels.name)
    train, valid = split_validation(
        train, cfg.data.validation_size, cfg.data.split, cfg.data.split_seed
    )
    splits = {"train": train, "valid": valid, "test": test}
    for name, split in splits.items():
        split.images = scale_pixels(split.images)
        save_split(split, Path(cfg.paths.processed) / f"{name}.npz")
    print("preprocess: " + ", ".join(f"{name} {len(split)}" for name, split in splits.items()))


if __name__ == "__main__":
    main()
