"""Infrastructure every stage uses: the error base (`errors.SanetError`), atomic writes, MLflow tracking, provenance
sidecars, file hashes, database pre-flight checks, the S3 remote and environment-variable helpers. The package
re-exports nothing.
"""
