"""Patches and field ownership, as pure functions over plain dicts.

- `jsonpatch` -- RFC 6902 JSON Patch (``application/json-patch+json``)
- `merge` -- RFC 7386 JSON Merge Patch (``application/merge-patch+json``)
- `strategic` -- strategic merge patch (``application/strategic-merge-patch+json``)
- `fieldpath` -- field sets (managedFields' FieldsV1) and the schema facts behind them
- `managedfields` -- recording ``Update`` operations in ``metadata.managedFields``
- `apply` -- server-side apply (``application/apply-patch+yaml``)

Import the submodule you need; this package imports none of them itself.
"""
