"""Entry point: compose the Hydra config and run (or resume) the embedding sweep.

python run_sweep.py [group=option ...] [key=value ...]     (see --help)

Exit codes: 0 done; 2 bad input (config, data, storage: one line naming the key or file); 1 an
unexpected error (its traceback, with any password masked, is in the log).
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweep import cli, parallel
from sweep.common.atomic import WriteError
from sweep.common.secrets import install_log_masking, remember, remember_config, scrub_files
from sweep.config import ConfigError
from sweep.data.corpus import DataError
from sweep.naming import register_resolvers
from sweep.runner import run
from sweep.search.settings import SearchError

register_resolvers()  # before Hydra resolves hydra.run.dir (${pid:}) and the study name
log = logging.getLogger("run_sweep")
USER_ERROR = cli.USER_ERROR
_started = False  # False while Hydra composes: its errors are user errors too (exit 2)


@hydra.main(version_base="1.3", config_path="configs", config_name="sweep")
def main(cfg: DictConfig) -> None:
    global _started
    _started = True
    hydra_cfg = HydraConfig.get()
    out_dir, overrides = hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task)
    remember_config(cfg)  # a password read from ${oc.env:...} is a secret once resolved
    scrub_files(out_dir)  # Hydra saved the overrides as typed: a literal password goes
    try:
        if cfg.search.workers != 1 and not cfg.get("plan"):
            table, codes = parallel.launch(cfg, out_dir, overrides)
            log.info("reports: %s/report.html (trials.csv, pareto.csv beside it)", out_dir)
            sys.exit(0 if all(code == 0 for code in codes) else 1)
        result = run(cfg, out_dir, overrides)
    except (ConfigError, DataError, SearchError, ValueError) as error:
        log.error("%s", error)
        sys.exit(USER_ERROR)
    except WriteError as error:  # a full disk: one line, the storage has every trial
        log.error("%s", error)
        sys.exit(1)
    except Exception:  # not Hydra's handler: it would print the overrides as typed
        log.exception("the sweep stopped on an unexpected error")
        sys.exit(1)
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
        if isinstance(rec.get("ship_precision"), str):
            measured = (
                f"validation accuracy {rec['ship_val_accuracy']:.2f}%, test accuracy "
                f"{rec['ship_test_accuracy']:.2f}%"
                if rec["ship_val_accuracy"] == rec["ship_val_accuracy"]  # not NaN
                else "accuracy at it not measured (report.quantize)"
            )
            log.info(
                "ships at %s: %s bytes of weights and vocabulary, %s "
                "(search.precision, search.max_model_bytes)",
                rec["ship_precision"],
                f"{int(rec['ship_bytes']):,}",
                measured,
            )


if __name__ == "__main__":
    install_log_masking()  # before Hydra logs anything (its multirun launcher lists overrides)
    for argument in sys.argv[1:]:  # secrets typed on the command line, before anything prints
        remember(argument)
    answered = cli.precheck(sys.argv[1:])  # --help, --cfg job, or a bad key: no Hydra run
    if answered is not None:
        sys.exit(answered)
    try:
        main()
    except SystemExit as stop:
        # Hydra exits 1 on an unknown key, group option or bad override: bad input, so 2.
        if stop.code == 1 and not _started:
            sys.exit(USER_ERROR)
        raise
