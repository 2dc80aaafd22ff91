"""Certificates on the control plane's side: the operator's files, ACME issuance and renewal.

The router only ever sees `phemeral.models.TlsCertificate` values (`RouterServer.set_certificates`)
and HTTP-01 answers (`RouterServer.set_challenge`); everything here decides what those are.
"""

# Nothing re-exported: import the module that owns a name (see the docstring).
__all__: list[str] = []
