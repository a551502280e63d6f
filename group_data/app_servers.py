"""App servers: nginx in front of the Node.js web service (maha-web). Defaults and their
meaning: mahaops/settings/app.py."""

app_keep_releases = 5  # unpacked releases kept; the current one and its rollback target always
app_port = 3000  # Node on 127.0.0.1; only nginx talks to it
app_health_retries = 30  # a release has 30 s to answer /health before it is rolled back
nginx_listen_port = 80  # the load balancer's target port
nginx_client_max_body_size = "10m"
nginx_static_max_age = 31536000  # a year: static files of a release never change
# Private uploads (the bucket and endpoint are the storage settings, mahaops/settings/storage.py)
app_upload_max_bytes = 10 * 1024 * 1024  # 10 MiB per file; larger ones get 413
app_upload_url_seconds = 300  # presigned and signed URLs live 5 minutes
app_uploads_cdn_url = ""  # "" = downloads by S3 presigned GET; on AWS: the CloudFront origin
app_cloudfront_key_id = ""  # "" = the key pair id provision stored (with app_uploads_cdn_url)
