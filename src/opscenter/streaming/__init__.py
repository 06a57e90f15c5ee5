"""The streaming engine: dump sources, stages (zstd, age, sha256), manifests, restores.

Uses remote/, engines/ and stores/; never a domain.
"""
