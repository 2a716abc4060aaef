"""Which datastore the API server runs on, selected as k3s selects it.

Without ``--datastore-endpoint`` the state lives in SQLite, ``<data-dir>/state.db`` (k3s's
default kine on SQLite). With ``--datastore-endpoint http(s)://host:2379[,...]`` it lives in an
etcd v3 cluster (`kubeling.storage.etcd.EtcdStore`), with ``--datastore-cafile``,
``--datastore-certfile`` and ``--datastore-keyfile`` for TLS; then nothing in the data dir holds
cluster state and ``state.db`` is neither created nor locked (an existing one is only read by
the SQLite -> etcd migration).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kubeling.storage.interface import Store
from kubeling.storage.sqlite import SQLiteStore

log = logging.getLogger(__name__)


def is_etcd(opts) -> bool:
    return bool(getattr(opts, "datastore_endpoint", ""))


async def open_store(opts, data_dir: Path | str) -> Store:
    """The API server's store: SQLite in ``data_dir`` unless ``opts.datastore_endpoint``."""
    data = Path(data_dir)
    if not is_etcd(opts):
        return await SQLiteStore.open(str(data / "state.db"), compact_interval=opts.compact_interval,
                                      compact_keep=opts.compact_keep)
    from kubeling.storage import migrate
    from kubeling.storage.etcd import EtcdStore, parse_endpoints

    etcd = dict(endpoints=parse_endpoints(opts.datastore_endpoint), ca_file=opts.datastore_cafile,
                cert_file=opts.datastore_certfile, key_file=opts.datastore_keyfile)
    await migrate.raise_revision_before_open(data, etcd)  # a migration's slow part, if one is due
    store = await EtcdStore.open(
        opts.datastore_endpoint, ca_file=opts.datastore_cafile or None,
        cert_file=opts.datastore_certfile or None, key_file=opts.datastore_keyfile or None,
        compact_interval=opts.compact_interval, compact_keep=opts.compact_keep)
    log.info("datastore: etcd at %s", ", ".join(store.endpoints))
    try:
        # k3s-style: an earlier SQLite cluster in `data / "state.db"` is copied into an empty etcd
        # (resourceVersions kept monotonic), then renamed; a half-done migration is refused
        await migrate.migrate_sqlite(store, data, endpoint_hint=opts.datastore_endpoint, etcd=etcd)
    except BaseException:
        await store.close()
        raise
    return store
