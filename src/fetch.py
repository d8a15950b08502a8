"""DVC stage `fetch`: the four MNIST IDX files into data/raw, verified by MD5."""

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bnn.core import hydra_entry
from bnn.data.fetch import RawFile, fetch_files, sources_from_config

# Each source tried and each file verified is a line of the stage's log file; the
# console gets one summary, and an error listing every source if none delivers.
log = logging.getLogger("bnn.fetch")


@hydra_entry.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    files = [RawFile(name=spec.name, md5=spec.md5) for spec in cfg.data.files.values()]
    sources = sources_from_config(OmegaConf.to_container(cfg.data.sources))
    fetched = fetch_files(files, sources, Path(cfg.paths.raw), cfg.data.timeout_s, log.info)
    print(f"fetch: {len(fetched)} files verified by MD5 in {cfg.paths.raw} (sources: fetch.log)")


if __name__ == "__main__":
    main()
