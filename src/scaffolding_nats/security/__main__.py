"""Security artefacts for a deployment, generated from the role table:

  python -m scaffolding_nats.security nats-config [--check] FILE   # the authorization block
  python -m scaffolding_nats.security secrets FILE [--api-key-tenant T]  # 0600 env file of
      SCAF_NATS_PASSWORD_<USER> lines (and SCAF_API_KEYS="T <key>"): compose's .env, or
      `kubectl create secret generic scaf-nats --from-env-file=FILE`
  python -m scaffolding_nats.security api-key --tenant NAME        # one gateway key line

``nats-config`` output is checked in (``k8s/nats/auth.conf``, used by compose too); it holds no
secret: each password is ``$SCAF_NATS_PASSWORD_<USER>``, read from the server's environment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..proto.subjects import Subjects
from .natsconf import HEADER, authorization
from .permissions import Deployment
from .secrets_file import load_or_create, write_env_file


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
    k = sub.add_parser("api-key")
    k.add_argument("--tenant", required=True)
    args = p.parse_args(argv)

    if args.command == "api-key":
        from ..proto.subjects import check_token
        from ..services.gateway.auth import new_key

        print(f"{check_token(args.tenant, 'tenant')} {new_key()}")
        return 0
    deployment = _deployment(args)
    if args.command == "secrets":
        values = load_or_create(args.output, [r.password_env for r in deployment.roles()])
        if args.api_key_tenant and not values.get("SCAF_API_KEYS"):
            from ..proto.subjects import check_token
            from ..services.gateway.auth import new_key

            values["SCAF_API_KEYS"] = f"{check_token(args.api_key_tenant, 'tenant')} {new_key()}"
            write_env_file(args.output, values)
        print(f"NATS passwords of {len(deployment.roles())} users in {args.output} (mode 0600)")
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


if __name__ == "__main__":
    sys.exit(main())
