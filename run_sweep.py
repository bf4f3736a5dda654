"""Entry point: compose the Hydra config and run (or resume) the embedding sweep.

python run_sweep.py [group=option ...] [key=value ...]     (see --help)
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweep import parallel
from sweep.config import ConfigError, check_config
from sweep.corpus import DataError
from sweep.runner import run
from sweep.search import SearchError

log = logging.getLogger("run_sweep")


@hydra.main(version_base="1.3", config_path="configs", config_name="sweep")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    out_dir, overrides = hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task)
    try:
        check_config(cfg)
        if cfg.search.workers != 1 and not cfg.get("plan"):
            table, codes = parallel.launch(cfg, out_dir, overrides)
            log.info("reports: %s/report.html (trials.csv, pareto.csv beside it)", out_dir)
            sys.exit(0 if all(code == 0 for code in codes) else 1)
        result = run(cfg, out_dir, overrides)
    except (ConfigError, DataError, SearchError, ValueError) as error:
        log.error("%s", error)
        sys.exit(2)
    if cfg.get("plan"):
        return
    log.info("reports: %s/report.html (trials.csv, pareto.csv beside it)", result.out_dir)
    rec = result.recommended
    if rec is None:
        log.info("no complete trial: no recommendation")
    else:
        log.info(
            "recommended: embedding_dim=%d vocab_size=%d (num_embeddings=%d): %s params, "
            "validation accuracy %.2f%%, test accuracy %.2f%%",
            rec["embedding_dim"],
            rec["vocab_size"],
            rec["num_embeddings"],
            f"{int(rec['params_total']):,}",
            rec["val_accuracy"],
            rec["test_accuracy"],
        )


if __name__ == "__main__":
    main()
