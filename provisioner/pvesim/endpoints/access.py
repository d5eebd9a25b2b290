"""``GET /access/permissions``: the effective privileges of the calling token.

As PVE answers it: a map of path to a map of privilege to its propagate flag (1), for one
``path`` or for the paths the token's ACL names; every user or token may read its own, another
one's needs Sys.Audit on ``/access`` (which the simulated non-root token does not hold).
"""

from __future__ import annotations

from provisioner.pvesim.core.permissions import Permissions, is_root, split_user
from provisioner.pvesim.core.privileges import ALL_PRIVS
from provisioner.pvesim.errors import SimError

PrivMap = dict[str, dict[str, int]]


def _acl_paths(perms: Permissions, token_id: str) -> list[str]:
    """Where the simulated token's ACL entries sit (root's, and everyone's on a simulator
    without privilege separation, is the one on ``/``)."""
    cfg = perms.store.cfg
    if not cfg.pool or is_root(token_id):
        return ["/"]
    return ["/nodes", f"/pool/{cfg.pool}", "/storage", f"/vms/{cfg.template_vmid}"]


def _privs_at(perms: Permissions, token_id: str, path: str) -> dict[str, int]:
    return {priv: 1 for priv in ALL_PRIVS if perms.has_perm(token_id, path, priv)}


def _check_whose(token_id: str, userid: str | None) -> None:
    """A token may dump its own permissions (its user's need that user's own login)."""
    if userid is None or userid == token_id:
        return
    if is_root(token_id) or split_user(token_id) == userid:
        return
    raise SimError(403, "Permission check failed (/access, Sys.Audit)")


def effective_permissions(perms: Permissions, token_id: str, path: str | None = None,
                          userid: str | None = None) -> PrivMap:
    """The answer of ``GET /access/permissions`` for the calling token."""
    _check_whose(token_id, userid)
    with perms.store.lock:
        if path is not None:
            return {path: _privs_at(perms, token_id, path)}
        tree = {p: _privs_at(perms, token_id, p) for p in _acl_paths(perms, token_id)}
        return {p: privs for p, privs in tree.items() if privs}
