"""An NFT found on chain whose sealed details name another address (a database restored from
an old backup, the VM rebuilt since) is re-sealed for the subscription's VM, not left pointing
at a dead address; with no signature to seal with, nothing is attempted."""

from __future__ import annotations

from pathlib import Path

from listener.chain.events import decode_log
from listener.chain.journal import Store
from listener.config import build_config
from listener.reconcile.decide import Action, next_action
from listener.reconcile.observe import facts_of, observe
from listener.reconcile.progress import DETAILS_NAME_ANOTHER_VM, Progress, sealed_for
from listener.runtime.wiring import pools_from_config
from provisioner.inventory import Inventory, VMRecord
from tests.support.reconcile_world import created_log


def reserved(tmp_path: Path) -> tuple[Store, Inventory, VMRecord]:
    config = build_config({"network": {"ip_pool": {"network": "10.9.0.0/24", "start": 10,
                                                   "end": 20, "gateway": "10.9.0.1"}},
                           "db": {"path": str(tmp_path / "b.db")}}, origin="test")
    store = Store.open(config.db.path)
    store.journal_batch([decode_log(created_log(1))], to_block=101, to_hash="0x" + "ab" * 32,
                        to_timestamp=1, block_times={})
    inventory = Inventory(store.conn)
    record = inventory.reserve("blockhost-001", pools=pools_from_config(config), node="pve1",
                               subscription_id=1)
    return store, inventory, record


def test_sealed_for_names_the_vm_only_when_the_details_do() -> None:
    assert sealed_for(7, names_it=True, can_seal=True) == 7
    assert sealed_for(7, names_it=False, can_seal=True) == DETAILS_NAME_ANOTHER_VM
    assert sealed_for(7, names_it=False, can_seal=False) is None


def test_a_found_token_naming_another_address_is_stale_and_resealed(tmp_path: Path) -> None:
    store, inventory, record = reserved(tmp_path)
    sub = store.subscription(1)
    assert sub is not None
    found = Progress(token_id=4, nft_expires_at=sub.expires_at,
                     credentials_vm=sealed_for(record.id, names_it=False, can_seal=True))
    observed, _ = observe(sub, found, inventory)
    assert observed.credentials_stale
    paid_until = sub.expires_at - 100
    assert next_action(facts_of(sub), paid_until, 0, observed) is Action.UPDATE_CREDENTIALS


def test_a_found_token_naming_our_vm_or_unsealable_is_left_alone(tmp_path: Path) -> None:
    store, inventory, record = reserved(tmp_path)
    sub = store.subscription(1)
    assert sub is not None
    for names_it, can_seal in ((True, True), (False, False)):
        found = Progress(token_id=4, nft_expires_at=sub.expires_at,
                         credentials_vm=sealed_for(record.id, names_it=names_it,
                                                   can_seal=can_seal))
        observed, _ = observe(sub, found, inventory)
        assert not observed.credentials_stale
        assert next_action(facts_of(sub), sub.expires_at - 100, 0, observed) is Action.CREATE_VM
