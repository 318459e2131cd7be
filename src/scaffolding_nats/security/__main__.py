"""Security artefacts for a deployment, generated from the role table:

  python -m scaffolding_nats.security nats-config [--check] FILE   # the authorization block
  python -m scaffolding_nats.security secrets FILE [--api-key-tenant T]  # 0600 env file of
      SCAF_NATS_PASSWORD_<USER> lines (and SCAF_API_KEYS="T <key>"): compose's .env, or
      `kubectl create secret generic scaf-nats --from-env-file=FILE`
  python -m scaffolding_nats.security api-key --tenant NAME        # one gateway key line
  python -m scaffolding_nats.security add-identity client NAME | worker KIND --tags T[,T]
      --env-file FILE --auth-file FILE [--nkey] [--out DIR] [--url URL] [--reload PIDFILE]...
      [--passwords-from-env]   # an identity for an outside program, in a running deployment
  python -m scaffolding_nats.security remove-identity USER --env-file FILE --auth-file FILE ...

``nats-config`` output is checked in (``k8s/nats/auth.conf``, the generic users of k8s); it
holds no secret: each password is ``$SCAF_NATS_PASSWORD_<USER>``, read from the server's
environment. A deployment's own identities (``add-identity``, see ``identities``) live in its
env file, and its ``--auth-file`` is rendered from it: compose's ``.compose/auth.conf``,
``make run``'s ``.run/secrets/nats-auth.conf``, or a k8s ConfigMap's ``auth.conf``
(``--passwords-from-env``: a restart reads the new password from the Secret). ``--reload``
signals the servers to re-read it (SIGHUP); README "NATS identities" has each deployment's steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..proto.subjects import Subjects
from . import identities
from .api_keys import key_line, new_key
from .natsconf import HEADER, authorization
from .permissions import Deployment
from .secrets_file import load_or_create, read_env_file, write_env_file, write_private


def _deployment(args: argparse.Namespace) -> Deployment:
    workers = dict(Deployment().workers)
    for spec in args.worker or []:
        kind, _, tags = spec.partition("=")
        workers[kind] = [t for t in tags.split(",") if t]
    return Deployment(subjects=Subjects(args.prefix), workers=workers, clients=args.client or [])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("nats-config", "secrets"):
        c = sub.add_parser(name)
        c.add_argument("output", type=Path)
        c.add_argument("--prefix", default="scaf")
        c.add_argument("--worker", action="append", help="KIND=TAG[,TAG] (default: openai, reward, tools)")
        c.add_argument("--client", action="append", help="a NATS client role that owns its jobs")
    sub.choices["nats-config"].add_argument("--check", action="store_true", help="fail if FILE is stale")
    sub.choices["secrets"].add_argument("--api-key-tenant", help="also a gateway API key for this tenant")
    sub.choices["secrets"].add_argument("--auth-file", type=Path, help="also this deployment's authorization block")
    k = sub.add_parser("api-key")
    k.add_argument("--tenant", required=True)
    add = sub.add_parser("add-identity", help="a client or worker identity, added to a (running) deployment")
    add.add_argument("kind", choices=["client", "worker"])
    add.add_argument("name", help="the client's owner name, or the worker kind")
    add.add_argument("--tags", default="", help="a worker's tags, comma-separated")
    add.add_argument("--nkey", action="store_true", help="log in with an nkey seed instead of a password")
    add.add_argument("--out", type=Path, help="write <user>.env (and <user>.nk) here for the client, mode 0600")
    add.add_argument("--url", help="the server URL to write into <user>.env")
    rm = sub.add_parser("remove-identity", help="an added identity's login stops working")
    rm.add_argument("user")
    for c in (add, rm):
        c.add_argument("--env-file", type=Path, required=True,
                       help="the deployment's secrets (.env, .run/secrets/nats.env)")  # fmt: skip
        c.add_argument("--auth-file", type=Path, required=True, help="the deployment's authorization block, rewritten")
        c.add_argument("--prefix", default="scaf")
        c.add_argument("--reload", type=Path, action="append", default=[], metavar="PIDFILE",
                       help="SIGHUP the nats-server of this pid file (make run's .run/nats-server*.pid)")  # fmt: skip
        c.add_argument("--passwords-from-env", action="store_true",
                       help="the auth file names $SCAF_NATS_PASSWORD_<USER> (k8s) instead of holding them")  # fmt: skip
    args = p.parse_args(argv)
    try:
        if args.command in ("add-identity", "remove-identity"):
            return _identity(args)
    except ValueError as exc:  # IdentityError, NkeyError, InvalidToken: the operator's input
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.command == "api-key":
        print(key_line(args.tenant, new_key()))
        return 0
    deployment = _deployment(args)
    if args.command == "secrets":
        values = load_or_create(args.output, [r.password_env for r in deployment.roles()])
        if args.api_key_tenant and not values.get("SCAF_API_KEYS"):
            values["SCAF_API_KEYS"] = key_line(args.api_key_tenant, new_key())
            write_env_file(args.output, values)
        print(f"NATS passwords of {len(deployment.roles())} users in {args.output} (mode 0600)")
        if args.auth_file:
            write_private(args.auth_file, identities.auth_text(values, deployment))
            print(f"this deployment's NATS users in {args.auth_file} (mode 0600)")
        return 0
    text = HEADER + authorization(deployment)
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(f"{args.output} is stale: run `make nats-config`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


def _identity(args: argparse.Namespace) -> int:
    base = Deployment(subjects=Subjects(args.prefix))
    values = read_env_file(args.env_file)
    if args.command == "remove-identity":
        identities.remove(values, args.user)
        done = f"removed {args.user}"
    else:
        identity = identities.Identity(args.kind, args.name, tuple(t for t in args.tags.split(",") if t))
        creds = identities.add(values, identity, nkey=args.nkey, base=base)
        done = f"added {creds.user} ({'nkey' if creds.seed else 'password'})"
    text = identities.auth_text(values, base, inline=not args.passwords_from_env)  # checks before writing
    write_env_file(args.env_file, values)
    write_private(args.auth_file, text)
    print(f"{done}: {args.env_file} and {args.auth_file} updated")
    if args.command == "add-identity" and args.out is not None:
        lines = creds.env(args.url)
        if creds.seed:
            write_private(args.out / f"{creds.user}.nk", creds.seed + "\n")
        write_env_file(args.out / f"{creds.user}.env", lines)
        print(f"its credentials (give them to its program only): {args.out / (creds.user + '.env')}")
    signalled = [pid for f in args.reload if (pid := identities.signal_reload(f)) is not None]
    if signalled:
        print(f"reload signalled to nats-server {', '.join(map(str, signalled))}")
    elif args.reload:
        print("no running nats-server to reload: it takes effect when the server next starts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
