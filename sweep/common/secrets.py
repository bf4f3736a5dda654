"""Secrets: one masking function for every place that prints or stores a URL, an override or a
config (the console, the logs, ``.hydra/``, CSV, JSON, the page, the study's attributes).

``mask(text)`` replaces with ``***``:

- the user info of every URL in the text, read as ``urllib.parse`` splits it: the password of
  ``user:password@`` (any characters, ``/`` ``:`` and ``@`` included), or the whole of a lone
  ``TOKEN@`` (a database URL's lone user is a role name, not a secret, and stays);
- the value of every query parameter that carries a credential (``password``, ``token``,
  ``key``, ``secret``, ``sig``, ``signature``, and the cloud storages' signed-URL keys such as
  ``X-Amz-Signature`` or ``X-Goog-Credential``);
- every secret this process was told of (``remember``, ``remember_config``) that holds a
  space, a quote or an angle bracket, in each spelling it may take in a file or a message: as
  typed, percent-encoded or decoded, JSON-, YAML- and ``repr``-escaped. Such a password cannot
  be told from the text around it by looking at the text, so the run collects the secrets of its
  own config and command line when it starts, before anything is printed.

An interpolation such as ``${oc.env:PGPASSWORD}`` is not a secret (it names where the secret is)
and stays as written. ``install_log_masking`` applies ``mask`` to every log record as it is made,
and ``scrub_files`` to the config files Hydra saves for a run.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import yaml

from sweep.common.atomic import replacing

HIDDEN = "***"

# A URL in running text: a scheme, then anything up to whitespace, a quote or an angle bracket.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*")
# Query parameters whose value is a credential (lowercase; matched whole, or as a part below).
_SECRET_KEYS = {
    "password", "passwd", "pwd", "pass", "secret", "token", "key", "apikey", "api_key", "sig",
    "signature", "auth", "authorization", "credential", "credentials", "code",
    "awsaccesskeyid", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "x-goog-security-token",
}  # fmt: skip
_SECRET_PARTS = ("password", "secret", "token", "signature", "credential", "apikey", "api_key")
# Schemes whose lone user (scheme://user@host) is a database role, not a secret.
_DATABASES = ("postgres", "mysql", "mariadb", "sqlite", "oracle", "mssql", "cockroach")
# Known secrets shorter than this are left to the URL rules alone: replacing a two-letter
# password everywhere would rewrite ordinary words of every log line.
_MIN_KNOWN = 4

_known: set[str] = set()  # secrets of this process (remember), in every spelling (_spellings)


def is_secret_key(name: str) -> bool:
    """True when a query parameter ``name`` carries a credential."""
    name = unquote(name).lower()
    return name in _SECRET_KEYS or any(part in name for part in _SECRET_PARTS)


def _is_interpolation(value: str) -> bool:
    return value.startswith("${") and value.endswith("}")


def _userinfo(url: str) -> tuple[int, int] | None:
    """(start, end) of a URL's user info in ``url``, or None. ``urlsplit`` ends the host part at
    the first ``/``; a password may hold ``/`` itself, so ``scheme://user:...@`` runs to the
    last ``@`` of the URL when the part before the first ``/`` has no ``@`` of its own."""
    start = url.find("://") + 3
    netloc = urlsplit(url).netloc
    if "@" in netloc:
        return start, start + netloc.rfind("@")
    # user:pass/word@host: a password may hold "/". Not host:port/path@x (digits after the
    # colon) nor an IPv6 host ([::1]:80/...): those have no user info.
    head = re.match(r"([^:/@?#\[]*):([^/@?#]*)", url[start:])
    if head and not head.group(2).isdigit() and "@" in url[start:]:
        return start, url.rfind("@")
    return None


def _urls(text: str, whole: bool) -> list[str]:
    """The URLs in running ``text``; with ``whole``, ``text`` is one value (a config string,
    an override's value) and its URL runs from the scheme to the end, spaces and quotes
    included."""
    if not whole:
        return [match.group(0) for match in _URL.finditer(text)]
    start = re.search(r"[A-Za-z][A-Za-z0-9+.\-]*://", text)
    return [] if start is None else [text[start.start() :]]


def secrets_in(text: str, whole: bool = False) -> list[str]:
    """The secrets of the URLs in ``text`` (passwords, lone-user tokens, credential query
    values), interpolations left out; ``whole``: ``text`` is one value (``_urls``)."""
    found = []
    for url in _urls(str(text), whole):
        span = _userinfo(url)
        if span is not None:
            user, colon, password = url[span[0] : span[1]].partition(":")
            scheme = url.split("://", 1)[0].lower()
            if colon:
                found.append(password)
            elif not scheme.startswith(_DATABASES):
                found.append(user)
        query = urlsplit(url).query
        found += [value for key, value in parse_qsl(query, keep_blank_values=True)
                  if is_secret_key(key)]  # fmt: skip
    return [s for s in found if s and not _is_interpolation(s) and s != HIDDEN]


def _mask_url(url: str) -> str:
    span = _userinfo(url)
    if span is not None:
        user, colon, password = url[span[0] : span[1]].partition(":")
        scheme = url.split("://", 1)[0].lower()
        if colon and password and not _is_interpolation(password):
            url = f"{url[: span[0]]}{user}:{HIDDEN}{url[span[1] :]}"
        elif not colon and user and not scheme.startswith(_DATABASES):
            url = f"{url[: span[0]]}{HIDDEN}{url[span[1] :]}"
    return _mask_query(url)


def _mask_query(text: str) -> str:
    """Credential query values (``?token=...``, ``&X-Amz-Signature=...``) in ``text``."""

    def value(match: re.Match) -> str:
        if not is_secret_key(match.group("key")) or _is_interpolation(match.group("value")):
            return match.group(0)
        return f"{match.group('head')}{HIDDEN}"

    pattern = r"(?P<head>[?&;](?P<key>[A-Za-z0-9_.%\-]+)=)(?P<value>[^&;#\s'\"<>]*)"
    return re.sub(pattern, value, text)


# Characters that end a URL in running text (``_URL``): a secret holding one cannot be found
# by the URL rules, so it is remembered and replaced wherever it appears. Any other secret is
# found by the URL rules where it stands; replacing it everywhere would also rewrite ordinary
# text (a password "postgres" in postgresql://postgres:postgres@...).
_UNDELIMITED = re.compile(r"[\s'\"<>`]")


def _spellings(secret: str) -> set[str]:
    """The ways ``secret`` may be written in a file or a message."""
    forms = {secret, unquote(secret)}
    for form in list(forms):
        forms |= {
            quote(form, safe=""),
            quote(form, safe="/:@"),
            json.dumps(form)[1:-1],
            repr(form)[1:-1],
            form.replace("'", "''"),  # YAML single-quoted
            form.replace("\\", "\\\\").replace('"', '\\"'),  # YAML double-quoted, Hydra quoted
            form.replace("'", "\\'"),  # Hydra's single-quoted override
        }
    return {form for form in forms if len(form) >= _MIN_KNOWN}


def remember(text: str) -> None:
    """Learn the secrets of the URLs in ``text`` (an override, a config value), so ``mask``
    hides them wherever they appear, even where the text around them cannot tell where they end."""
    text = str(text)
    value = text.split("=", 1)[1] if re.match(r"[+~\w.\-/]+=", text) else text  # an override
    for secret in {*secrets_in(value, whole=True), *secrets_in(text)}:
        if _UNDELIMITED.search(secret):
            _known.update(_spellings(secret))


def remember_config(cfg) -> None:
    """Learn the secrets of every string in a config (resolved where it resolves: an
    ``${oc.env:...}`` password is a secret once read)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    def walk(node) -> Iterable[str]:
        if isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
        elif isinstance(node, str):
            yield node

    if isinstance(cfg, (DictConfig, ListConfig)):
        for resolve in (False, True):
            try:
                plain = OmegaConf.to_container(cfg, resolve=resolve, throw_on_missing=False)
            except Exception:  # an interpolation that cannot resolve yet: the typed form only
                continue
            for text in walk(plain):
                remember(text)
    else:
        for text in walk(cfg):
            remember(text)


def forget() -> None:
    """Drop every remembered secret (tests, and a process that starts another run)."""
    _known.clear()


def mask(text: str) -> str:
    """``text`` with every secret replaced by ``***`` (the module docstring says which)."""
    text = str(text)
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, HIDDEN)
    text = _URL.sub(lambda m: _mask_url(m.group(0)), text)
    return _mask_query(text)


def has_secret(text: str) -> bool:
    """True when ``mask`` would change ``text``."""
    return mask(text) != str(text)


def mask_data(value):
    """``value`` (JSON-like: dicts, lists, strings, numbers) with every string masked."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask_data(k) if isinstance(k, str) else k: mask_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_data(v) for v in value]
    return value


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask secrets in a record's message, arguments and traceback (in place)."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format call: logging reports it later, as it would unmasked
        return record
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
    typed, so a literal password on the command line would otherwise stay on disk. Each file is
    read as YAML and every string in it masked, whatever quoting Hydra gave it."""
    run_dir = Path(run_dir)
    changed = []
    for path in [*sorted((run_dir / ".hydra").glob("*.yaml")), run_dir.parent / "multirun.yaml"]:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError:
            content = None
        masked = mask(text) if content is None else _dump(mask_data(content))
        if masked != text and (content is None or mask_data(content) != content):
            with replacing(path) as tmp:
                Path(tmp).write_text(masked, encoding="utf-8")
            changed.append(str(path))
    if changed:
        logging.getLogger(__name__).warning(
            "a password or token was given on the command line; it is masked in %s. Pass it as "
            "${oc.env:PGPASSWORD} (an environment variable) instead",
            ", ".join(changed),
        )
    return changed


def _dump(content) -> str:
    return yaml.safe_dump(content, sort_keys=False, allow_unicode=True, default_flow_style=False)
