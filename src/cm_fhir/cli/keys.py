"""``cm-fhir keys generate``: a key pair for SMART Backend Services. I/O edge: writes a file.

It writes the private key as PEM, readable by its owner only (0600), and prints the public JWKS
to register with the EHR (its ``kid`` is the key's RFC 7638 thumbprint, which the client computes
again from the key, so nothing else needs keeping). It never overwrites a key unless told to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cm_fhir.cli._app import app
from cm_fhir.cli.errors import fail

if TYPE_CHECKING:
    from cm_fhir.fhir_client.keys import Algorithm


keys_app = typer.Typer(help="Key pairs for SMART Backend Services.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def generate_command(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the private key (PEM)."),
    alg: str = typer.Option("ES384", "--alg", help="ES384 (EC P-384) or RS384 (RSA 3072)."),
    jwks_out: Path | None = typer.Option(
        None, "--jwks", help="Also write the public JWKS to this file."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing key file."),
) -> None:
    """Write a private key (0600) and print the public JWKS to register with the EHR."""
    from cm_fhir.fhir_client.keys import generate_private_key, jwks, write_private_key

    if alg not in ("ES384", "RS384"):
        fail(f"--alg {alg}: use ES384 or RS384")
    algorithm: Algorithm = "ES384" if alg == "ES384" else "RS384"
    key = generate_private_key(algorithm)
    try:
        write_private_key(key, out, overwrite=force)
    except FileExistsError:
        fail(f"{out}: exists; use --force to replace the key (the EHR must get the new JWKS)")
    except OSError as exc:
        fail(f"{out}: cannot write ({exc.strerror or exc})")
    document = json.dumps(jwks(key), indent=2)
    if jwks_out is not None:
        try:
            jwks_out.write_text(document + "\n", encoding="utf-8")
        except OSError as exc:
            fail(f"{jwks_out}: cannot write ({exc.strerror or exc})")
    typer.echo(document)
