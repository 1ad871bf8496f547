"""The on-storage format: key layout, lake header, manifests, references (docs/format.md)."""
