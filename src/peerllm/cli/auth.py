"""`peerllm auth issuer` and `peerllm token create|list|revoke`: this node's issuer and tokens.

These work on the data dir, with or without a running node (the issuer key is a file
there): a running node on the same data dir picks up a revocation within a second and
passes it on to its peers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ..audit import NULL_AUDIT, AuditSink, open_audit_log
from ..audit import events as audit_events
from ..auth import Authority, Role
from ..config import NodeConfig
from ..config.audit import AUDIT_FILE
from ..errors import PeerLLMError
from .common import build_config, console, data_dir_of

_F = TypeVar("_F", bound=Callable[..., Any])
_DURATION = re.compile(r"(\d+)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RATE = re.compile(r"(\d+)\s*(?:/\s*(?:min|m))?")
CLI = "cli"  # "by" of the audit lines of token actions taken on the command line


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` or plain seconds, as seconds.

    Raises:
        click.BadParameter: anything else, or zero.
    """
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None or int(m.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 30d, 12h, 90m or 45s")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_rate(text: str | None) -> int | None:
    """``N/min`` or ``N`` (per minute), or None."""
    if text is None:
        return None
    m = _RATE.fullmatch(text.strip().lower())
    if m is None or int(m.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a rate like 60/min")
    return int(m.group(1))


def _data_dir_options(fn: _F) -> _F:
    fn = click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
                      help="The node's data dir [env PEERLLM_DATA_DIR].")(fn)
    return click.option("--config", "config_path",
                        type=click.Path(path_type=Path, dir_okay=False),
                        help="YAML config file (for data_dir and auth.issuer_key_file).")(fn)


def _config(config_path: Path | None, data_dir: Path | None) -> NodeConfig:
    return build_config(config_path, {"data_dir": str(data_dir)} if data_dir else {})


def _authority(config_path: Path | None, data_dir: Path | None) -> Authority:
    cfg = _config(config_path, data_dir)
    try:
        return Authority(data_dir=data_dir_of(cfg), config=cfg.auth)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def _audit(config_path: Path | None, data_dir: Path | None) -> Iterator[AuditSink]:
    """The node's audit log in its data dir (the CLI's token actions belong in it too)."""
    cfg = _config(config_path, data_dir)
    root = data_dir_of(cfg)
    if not cfg.audit.enabled:
        yield NULL_AUDIT
        return
    try:
        with open_audit_log(root / AUDIT_FILE, node=_peer_id(root),
                            max_bytes=cfg.audit.max_bytes, backups=cfg.audit.backups,
                            rate_per_s=cfg.audit.lines_per_s) as sink:
            yield sink
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc


def _peer_id(root: Path) -> str:
    from ..identity import KEY_FILE_NAME, load_or_create_key, peer_id_of, public_key_bytes

    return peer_id_of(public_key_bytes(load_or_create_key(root / KEY_FILE_NAME)[0]))


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@click.group()
def auth() -> None:
    """This node's issuer key (the one that signs its tokens)."""


@auth.command()
@_data_dir_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def issuer(config_path: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Print this node's issuer public key: give it to other nodes with --trust-issuer."""
    a = _authority(config_path, data_dir)
    if as_json:
        click.echo(json.dumps({"issuer": a.issuer_id, "trusted": sorted(a.trusted)}))
    else:
        click.echo(a.issuer_id)


@click.group()
def token() -> None:
    """Issue, list and revoke access tokens of this node's issuer."""


@token.command()
@_data_dir_options
@click.option("--role", required=True, type=click.Choice([r.label for r in Role]),
              help="What the token may do: readonly < user < operator < admin.")
@click.option("--model", "models", multiple=True,
              help="A model the token may use (repeatable; default every model).")
@click.option("--rate", help="Requests per minute, e.g. 60/min (default unlimited).")
@click.option("--tokens-rate", help="Tokens (prompt + completion) per minute, e.g. 20000/min.")
@click.option("--ttl", default="30d", show_default=True, help="Lifetime: 30d, 12h, 90m...")
@click.option("--name", default="user", show_default=True,
              help="The subject: a user or app name (shown in audit and usage).")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its claims as JSON.")
def create(config_path: Path | None, data_dir: Path | None, role: str, models: tuple[str, ...],
           rate: str | None, tokens_rate: str | None, ttl: str, name: str,
           as_json: bool) -> None:
    """Create a token; it is printed alone on the last line (keep it secret)."""
    a = _authority(config_path, data_dir)
    try:
        tok, claims = a.create_token(
            subject=name, roles=[Role.parse(role)], ttl_s=parse_duration(ttl),
            now=int(time.time()), models=list(models) or None,
            requests_per_min=parse_rate(rate), tokens_per_min=parse_rate(tokens_rate))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot record the token: {exc}") from exc
    with _audit(config_path, data_dir) as sink:
        audit_events.token_created(sink, token_id=claims.id, subject=claims.subject,
                                   roles=[r.label for r in claims.roles], models=claims.models,
                                   expires_at=claims.expires_at, by=CLI)
    if as_json:
        click.echo(json.dumps(claims.to_claims() | {"token": tok}))
        return
    click.echo(f"token {claims.id} for {claims.subject!r}: role {role}, models "
               f"{', '.join(claims.models) if claims.models else 'all'}, expires "
               f"{_when(claims.expires_at)}")
    click.echo(tok)


@token.command("list")
@_data_dir_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_tokens(config_path: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """List the tokens this node's issuer created (never the tokens themselves)."""
    a = _authority(config_path, data_dir)
    a.revocations.rescan(now=time.time())
    rows = [(c, a.is_revoked(c)) for c in a.ledger.all()]
    if as_json:
        click.echo(json.dumps([c.to_claims() | {"revoked": r} for c, r in rows], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"tokens of issuer {a.issuer_id}")
    for col in ("id", "subject", "role", "models", "rate", "expires", "state"):
        table.add_column(col)
    now = time.time()
    for c, revoked in rows:
        state = "revoked" if revoked else "expired" if c.expires_at <= now else "valid"
        rates = "/".join("-" if v is None else str(v)
                         for v in (c.requests_per_min, c.tokens_per_min))
        table.add_row(c.id, c.subject, c.role.label, ", ".join(c.models or ["all"]), rates,
                      _when(c.expires_at), state)
    console().print(table)


@token.command()
@_data_dir_options
@click.argument("token_id")
def revoke(config_path: Path | None, data_dir: Path | None, token_id: str) -> None:
    """Revoke a token by its id: every node trusting this issuer refuses it within 10 s."""
    a = _authority(config_path, data_dir)
    from ..auth.tokens import TOKEN_ID

    if not TOKEN_ID.fullmatch(token_id):
        raise click.BadParameter(f"{token_id!r} is not a token id (see `peerllm token list`)")
    known = a.ledger.get(token_id)
    rev = a.revoke(token_id, now=int(time.time()))
    with _audit(config_path, data_dir) as sink:
        audit_events.token_revoked(sink, token_id=token_id, by=CLI,
                                   subject=known.subject if known else None)
    click.echo(f"revoked token {token_id}" + ("" if known else
               " (not issued from this data dir; revoked anyway)")
               + f"; the record lasts until {_when(rev.expires_at)}")
