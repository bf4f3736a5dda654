"""Secrets: one masking function for every place that prints or stores a URL or an override.

A storage URL may carry a password as its userinfo (``postgresql://user:pw@host/db``, where the
password may hold any character, ``/`` and ``@`` included) or as a query parameter
(``?password=pw``). ``mask`` replaces both with ``***``. ``install_log_masking`` applies it to every log record as
it is made, so no log line (the console, Hydra's run log and its multirun launcher's, a worker's
log) can carry one either, whichever handlers Hydra configures later.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sweep.common.atomic import replacing

HIDDEN = "***"

# userinfo: scheme://user:password@host. The password runs to the LAST '@' before the host part
# ends (a password may contain '/', ':' or '@'), but not past whitespace or a quote, so one URL
# inside a longer text (a log line, a list of overrides) is masked alone.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<pw>[^\s'\"]*)@")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|pass|secret|token|access_token|api_key|apikey)=)"
    r"(?P<pw>[^&;#\s'\"]*)",
    re.IGNORECASE,
)


def mask(text: str) -> str:
    """``text`` with every URL password (userinfo or query parameter) replaced by ``***``.

    An interpolation such as ``${oc.env:PGPASSWORD}`` is not a secret (it names where the secret
    is) and stays as written.
    """
    text = str(text)

    def userinfo(match: re.Match) -> str:
        password = match.group("pw")
        if password.startswith("${") and password.endswith("}"):
            return match.group(0)
        return f"{match.group('head')}:{HIDDEN}@"

    text = _USERINFO.sub(userinfo, text)
    return _QUERY.sub(lambda m: m.group("head") + HIDDEN, text)


def has_secret(text: str) -> bool:
    """True when ``mask`` would change ``text``."""
    return mask(text) != str(text)


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask secrets in a record's message, arguments and traceback (in place)."""
    message = record.getMessage()
    masked = mask(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[1] is not None:
        # Formatters use exc_text when it is set: the traceback is printed masked.
        record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
    return record


def install_log_masking() -> None:
    """Mask every log record of this process as it is made (a record factory: it holds whatever
    handlers are configured later). Safe to call more than once."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "masks_secrets", False):
        return

    def masking_factory(*args, **kwargs) -> logging.LogRecord:
        return mask_record(factory(*args, **kwargs))

    masking_factory.masks_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masking_factory)


def scrub_files(run_dir) -> list[str]:
    """Mask secrets in the config files Hydra saved for a run (``.hydra/*.yaml`` and a
    multirun's ``multirun.yaml``); return the files changed. Hydra writes the overrides as
    typed, so a literal password on the command line would otherwise stay on disk."""
    run_dir = Path(run_dir)
    changed = []
    for path in [*sorted((run_dir / ".hydra").glob("*.yaml")), run_dir.parent / "multirun.yaml"]:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if has_secret(text):
            with replacing(path) as tmp:
                Path(tmp).write_text(mask(text), encoding="utf-8")
            changed.append(str(path))
    if changed:
        logging.getLogger(__name__).warning(
            "a password was given on the command line; it is masked in %s. Pass it as "
            "${oc.env:PGPASSWORD} (an environment variable) instead",
            ", ".join(changed),
        )
    return changed
