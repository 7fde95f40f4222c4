"""Token Status List (draft-ietf-oauth-status-list): the shield as Status Issuer and Status
Provider for the tokens it issues, and as Relying Party in resource-server mode.

``codec`` is the encoding (a leaf beside the JOSE layer); the issuing and consuming sides
build on it.
"""
