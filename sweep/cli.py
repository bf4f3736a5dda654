"""The command line around Hydra: ``--help`` with every key's comment, ``--cfg job`` with the
resolved study name, and one clear line (exit 2) for an unknown key or option.

``run_sweep.py`` calls ``precheck(argv)`` before handing the command to Hydra: it composes the
config once with the same overrides, so a typo (``train.epoch=1``) is answered with the nearest
valid keys instead of Hydra's advice to add it with ``+`` (which would train with the key
silently ignored).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from sweep.common.overrides import override_key
from sweep.common.secrets import mask
from sweep.config import did_you_mean, dotted_keys
from sweep.naming import register_resolvers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
USER_ERROR = 2
# Config groups that hold shared pieces (merged into an option), not options a user picks.
_INTERNAL_GROUPS = ("hydra", "common")
# Where a '+key=value' override may add a key: extra search axes, and a custom model's arguments.
_ADDABLE = ("search.space.", "model.")


def overrides_of(argv: Sequence[str]) -> list[str]:
    """The ``key=value`` overrides of a command line (flags and their values left out)."""
    return [a for a in argv if "=" in a and not a.startswith("-")]


def compose_user(overrides: Sequence[str], hydra_config: bool = False) -> DictConfig:
    """The primary config composed as ``run_sweep.py`` would (``hydra.*`` overrides left out)."""
    user = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="sweep", overrides=user, return_hydra_config=hydra_config)


def nearest(key: str, overrides: Sequence[str]) -> str:
    """`` did you mean a, b?`` for ``key`` among the config's keys, or ''."""
    others = [o for o in overrides if override_key(o) != key]
    try:
        known = dotted_keys(compose_user(others))
    except HydraException:
        known = dotted_keys(compose_user([]))
    return did_you_mean(key, known)


def friendly(error: HydraException, overrides: Sequence[str]) -> str:
    """One message for a composition error, naming the key or option and what to do."""
    text = str(error).strip()
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        return (
            f"unknown config key {key}{nearest(key, overrides)} "
            "(python run_sweep.py --help lists every key with its comment)"
        )
    if isinstance(error, MissingConfigException):
        return text.split("Config search path")[0].strip().replace("\n\t", " ").replace("\n", " ")
    return f"cannot read the command line: {text.splitlines()[0]}"


def check_additions(overrides: Sequence[str]) -> str | None:
    """A ``+key=value`` outside search.space and model adds a key nothing reads: refuse it."""
    for override in overrides:
        if not override.startswith("+") or override.startswith("++"):
            continue
        key = override_key(override)
        if not (key.startswith("hydra") or key.startswith(_ADDABLE) or "/" in key):
            return (
                f"+{key} adds a key that nothing reads: {key} is not a config key"
                f"{nearest(key, [])} (+ adds keys only under search.space and model)"
            )
    return None


def config_groups() -> list[str]:
    """The config groups a user chooses from (``data``, ``search/sampler``, ...), sorted; the
    internal ones (``common/``: merged into each option's file) left out."""
    return sorted(
        {
            str(p.relative_to(CONFIGS).parent)
            for p in CONFIGS.rglob("*.yaml")
            if p.parent != CONFIGS and not set(p.relative_to(CONFIGS).parts) & set(_INTERNAL_GROUPS)
        }
    )


def render_help(overrides: Sequence[str]) -> str:
    """The help page: each group's options, then every key with its comment, as the YAML files
    of the chosen options say them (so ``--help model=cnn`` shows the CNN's keys)."""
    choices = compose_user(overrides, hydra_config=True).hydra.runtime.choices
    lines = [
        "run_sweep: sweep the nn.Embedding front end (embedding_dim and vocabulary cutoff) of a",
        "text classifier with Optuna; write trials.csv, pareto.csv and report.html in the run",
        "folder.",
        "",
        "== Config groups (choose one of each: group=option; current choice in [ ]) ==",
    ]
    groups = config_groups()
    for group in groups:
        options = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
        shown = [f"[{o}]" if o == choices.get(group) else o for o in options]
        lines.append(f"{group}: {', '.join(shown)}")
    lines += ["", "== Keys (override any: key=value; comments from the YAML files) ==", ""]
    lines += ["# top level", *yaml_body(CONFIGS / "sweep.yaml")]
    for group in groups:
        option = choices.get(group)
        if option is None:
            continue
        path = CONFIGS / group / f"{option}.yaml"
        prefix = group.replace("/", ".")
        lines += ["", f"# {prefix}.*  ({group}={option})"]
        for included in included_files(path):
            lines += yaml_body(included)
    lines += [
        "",
        "Examples:",
        "  python run_sweep.py                                   # synthetic data, bag model, 12 trials",
        "  python run_sweep.py data=files data.train=my.csv search.n_trials=40",
        "  python run_sweep.py data=ag_news model=cnn              # downloaded on first use",
        "  python run_sweep.py --help model=cnn                  # the CNN's keys",
        "  python run_sweep.py --cfg job                         # the composed config, no training",
        "Re-running the same command resumes its study. Hydra's own options: --hydra-help.",
    ]
    return "\n".join(lines)


def included_files(path: Path) -> list[Path]:
    """``path`` after the files its defaults list merges in (``common/text@_here_``, ...)."""
    config = OmegaConf.load(path)
    out = []
    for entry in config.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_" and "@_here_" in entry:
            out += included_files(path.parent / f"{entry.split('@')[0]}.yaml")
    return [*out, path]


def yaml_body(path: Path) -> list[str]:
    """A YAML file's lines without its defaults list and hydra block (comments kept)."""
    out, skipping = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        top = line and not line[0].isspace() and not line.startswith("#")
        if top:
            skipping = line.split(":", 1)[0] in ("defaults", "hydra")
        if not skipping and line.strip():
            out.append(line)
    return out


def precheck(argv: Sequence[str]) -> int | None:
    """Answer ``--help`` and ``--cfg job``, or stop a bad command line (exit 2); None: go on."""
    argv = list(argv)
    if any(a in argv for a in ("--hydra-help", "--shell-completion", "-sc", "--info", "-i")):
        return None
    overrides = overrides_of(argv)
    multirun = "--multirun" in argv or "-m" in argv
    try:
        if "--help" in argv or "-h" in argv:
            print(render_help([] if multirun else overrides))
            return 0
        if multirun:  # sweeps (a,b,c) are Hydra's to expand; each job is checked as it starts
            return None
        cfg = compose_user(overrides)
    except HydraException as error:
        print(f"error: {mask(friendly(error, overrides))}", file=sys.stderr)
        return USER_ERROR
    added = check_additions(overrides)
    if added:
        print(f"error: {added}", file=sys.stderr)
        return USER_ERROR
    cfg_flag = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--cfg", "-c")), None)
    if cfg_flag == "job" and "--resolve" not in argv:
        # Only the study name is resolved: other interpolations (${oc.env:PGPASSWORD}) stay.
        cfg.search.study_name = str(cfg.search.study_name)
        print(mask(OmegaConf.to_yaml(cfg)), end="")
        return 0
    return None
