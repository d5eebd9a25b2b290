"""HTTPS front end of the simulator: PVE's ``/api2/json`` envelope plus a ``/_sim`` control API.

PVE conventions reproduced here:

* success: ``200`` with ``{"data": ...}``;
* errors: the message is the HTTP reason phrase, the body is ``{"data": null, "message": "...\\n"}``
  and, for parameter errors (400), ``"errors": {param: message}``;
* ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`` (401 when missing or wrong);
* form-encoded POST/PUT bodies, query parameters for GET/DELETE;
* permission check (403) before parameter verification (400) before the handler.

:mod:`.httpd` serves the connections, :mod:`.api` and :mod:`.control_routes` answer the two
APIs, :mod:`.routes` and :mod:`.auth` hold the route table and the token check.
"""
