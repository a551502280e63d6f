"""Storage servers: the S3 API (moto's S3 behind a signature check) app servers presign
for on the local platform and in tests. Defaults and their meaning:
mahaops/settings/storage.py (storage_port, storage_region and storage_uploads_bucket are
shared with the app servers: set them in all.py or an overlay)."""

storage_cors_origins: list[str] = []  # besides the load balancers' own https origins
storage_tls_names: list[
    str
] = []  # more certificate names, besides address, name, 127.0.0.1, localhost
storage_clock_skew_seconds = 900  # header-signed requests further off are refused
storage_presign_max_seconds = 604800  # the longest X-Amz-Expires accepted (7 days)
storage_max_object_bytes = 1073741824  # larger bodies are refused (413)
storage_loglevel = "warning"  # "info": one journal line per request
