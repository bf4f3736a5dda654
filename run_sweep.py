"""Entry point: compose the Hydra config and run (or resume) the embedding sweep.

python run_sweep.py [group=option ...] [key=value ...]     (see --help)

Exit codes (docs/failures.md "Exit codes"): 0 done (the study holds search.n_trials finished
trials, or search.timeout_s ended the run); 2 bad input (config, data, storage: one line naming
the key or file); 1 an unexpected error (its traceback, with any password masked, is in the
log); 3 workers of search.workers failed and the study is short of trials (their logs are
named); 143 or 130 stopped by SIGTERM or SIGINT (running trials failed, reports written: run it
again to resume).
"""

import logging
import sys
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweep import cli, parallel
from sweep.common import stop
from sweep.common.atomic import WriteError
from sweep.common.secrets import install_log_masking, remember, remember_config, scrub_files
from sweep.config import ConfigError
from sweep.data.corpus import DataError
from sweep.naming import register_resolvers
from sweep.report import wording
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
    stop.install()  # SIGTERM, SIGINT: running trials failed, reports written, exit 143 / 130
    parallel.tie_to_parent()  # a worker of search.workers ends with its parent
    hydra_cfg = HydraConfig.get()
    out_dir, overrides = hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task)
    remember_config(cfg)  # a password read from ${oc.env:...} is a secret once resolved
    scrub_files(out_dir)  # Hydra saved the overrides as typed: a literal password goes
    try:
        if cfg.search.workers != 1 and not cfg.get("plan"):
            code = parallel.launch(cfg, out_dir, overrides)
            if (Path(out_dir) / "report.html").is_file():
                log.info("reports: %s/report.html (trials.csv, pareto.csv beside it)", out_dir)
                log_recommendation(pd.read_csv(Path(out_dir) / "trials.csv"))
            sys.exit(code)
        result = run(cfg, out_dir, overrides)
    except stop.Stopped as stopped:  # the reports are written; the log says what was failed
        log.warning("%s: exit %d (run the same command again to resume)", stopped.reason,
                    stopped.exit_code)  # fmt: skip
        sys.exit(stopped.exit_code)
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
    log_recommendation(result.table)


def log_recommendation(table) -> None:
    """The recommended trial, worded as the page words it (``sweep.report.wording``)."""
    rec = table[table["recommended"]] if len(table) and "recommended" in table else table[:0]
    if rec.empty:
        log.info("no complete trial: no recommendation")
        return
    for line in wording.recommendation_lines(rec.iloc[0].to_dict()):
        log.info("%s", line)


if __name__ == "__main__":
    install_log_masking()  # before Hydra logs anything (its multirun launcher lists overrides)
    for argument in sys.argv[1:]:  # secrets typed on the command line, before anything prints
        remember(argument)
    answered = cli.precheck(sys.argv[1:])  # --help, --cfg job, or a bad key: no Hydra run
    if answered is not None:
        sys.exit(answered)
    try:
        main()
    except SystemExit as exiting:
        # Hydra exits 1 on an unknown key, group option or bad override: bad input, so 2.
        if exiting.code == 1 and not _started:
            sys.exit(USER_ERROR)
        raise
    except stop.Stopped as stopped:  # a stop outside the run (Hydra's own setup, logging)
        sys.exit(stopped.exit_code)
